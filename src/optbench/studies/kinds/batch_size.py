"""batch_size_scaling: what the batch size trades (steps, examples, seconds), and how to scale the lr with it.

Part A, the convex problem (`convex_train`: least squares, whose optimum is known). Plain SGD with each
of `batch_sizes` (batch 1, a mini-batch, the full training set) is tuned with the same budget
(`tune` + `convex_tune`), then trained for the same number of epochs (the same examples) on every
evaluation seed. DistanceClock measures, after every optimizer step, the distance to the optimum, the
examples seen and the training seconds; per run:

    steps_to_eps, examples_to_eps, seconds_to_eps   at the first step whose distance is <= `eps`; a run that
                                                    never gets there counts its totals (a lower bound, "censored")
    final_dist                                      the distance after the last step

Part B, the scaling rules (`scaling_train`: a CNN with SGD + momentum and a warmup schedule). The learning
rate lr0 is tuned at `base_batch` b0 (`tune` + `scaling_tune`); for each factor k of `factors`, batch k·b0
is trained (same epochs) with the linear rule lr = k·lr0, the square-root rule lr = sqrt(k)·lr0, and an lr
retuned at k·b0 with the same budget, on every evaluation seed. Per run: test_acc, val_acc_best.

Claims (`claims`) compare two variants of part A, or two rules of part B (judged once per factor). Every
variant runs on the same evaluation seeds, so a claim is tested on the per-seed differences (paired t,
optbench.stats's policy) against its `margin` (default `threshold`), as an advantage or an equivalence
(TOST) test, Holm-corrected over the study's claims. A run that never reached eps counts its totals, a
lower bound: a verdict such a bound could have produced wrongly is inconclusive (stats.censoring_guard).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from mlflow.entities import Metric
from omegaconf import DictConfig

from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.stats import mean_ci
from optbench.studies.config import seeds_of
from optbench.studies.report import fmt, fmt_ci
from optbench.studies.runner import Study
from optbench.studies.verdict import judge_claim
from optbench.tracking import log_values
from optbench.training.callbacks import DistanceClock

FULL = "full"  # the batch size of `batch_sizes` that means "the whole training split"
RULES = ("linear", "sqrt", "retuned")
CONVEX_METRICS = ("steps_to_eps", "examples_to_eps", "seconds_to_eps", "final_dist")  # lower is better
SCALING_METRICS = ("test_acc", "val_acc_best")  # higher is better
BOUNDS = {**dict.fromkeys(CONVEX_METRICS, (0.0, math.inf)), **dict.fromkeys(SCALING_METRICS, (0.0, 1.0))}


# --- configuration ------------------------------------------------------------------------------------------


def batch_sizes(cfg: DictConfig) -> dict[str, int | str]:
    """Part A's variants: name -> a positive batch size, or "full" for the whole training split."""
    sizes = dict(cfg.batch_sizes)
    for name, size in sizes.items():
        if size != FULL and not (isinstance(size, int) and size >= 1):
            raise ConfigError(
                f"study {cfg.name}: batch_sizes.{name} must be a positive integer or '{FULL}', got {size!r}."
            )
    return sizes


def factors(cfg: DictConfig) -> list[int]:
    ks = list(cfg.factors)
    if not ks or not all(isinstance(k, int) and k >= 2 for k in ks):
        raise ConfigError(
            f"study {cfg.name}: factors must be integers of at least 2 (batch = factor x base_batch), got {ks}."
        )
    if not (isinstance(cfg.base_batch, int) and cfg.base_batch >= 1):
        raise ConfigError(f"study {cfg.name}: base_batch must be a positive integer, got {cfg.base_batch!r}.")
    return ks


def check_config(cfg: DictConfig) -> None:
    """Every check that can run before the first training run, so a typo fails in seconds, not minutes."""
    if not (isinstance(cfg.eps, (int, float)) and cfg.eps > 0):
        raise ConfigError(
            f"study {cfg.name}: eps (the distance to the optimum that counts as reached) must be > 0, got {cfg.eps!r}."
        )
    every = cfg.curve_every_examples
    if not (isinstance(every, int) and every >= 1):
        raise ConfigError(f"study {cfg.name}: curve_every_examples must be a positive integer, got {every!r}.")
    if len(seeds_of(cfg)) < 2:
        raise ConfigError(f"study {cfg.name}: the claims need a t-interval over seeds; give at least two seeds.")
    variants, _ = batch_sizes(cfg), factors(cfg)
    for name, claim in cfg.claims.items():
        convex = claim.better in variants and claim.than in variants
        if not (convex or (claim.better in RULES and claim.than in RULES)):
            raise ConfigError(
                f"study {cfg.name}: claim {name} compares {claim.better} with {claim.than}; a claim compares two "
                f"variants of batch_sizes ({', '.join(variants)}) or two scaling rules ({', '.join(RULES)})."
            )
        metrics = CONVEX_METRICS if convex else SCALING_METRICS
        if claim.metric not in metrics:
            raise ConfigError(
                f"study {cfg.name}: claim {name}: metric {claim.metric} does not apply to what it compares; use "
                f"one of {', '.join(metrics)}."
            )
        if claim.get("test", "advantage") not in ("advantage", "equivalence"):
            raise ConfigError(
                f"study {cfg.name}: claim {name}: test must be advantage or equivalence, got {claim.test!r}."
            )


# --- shared steps -------------------------------------------------------------------------------------------


def tuned_settings(study: Study, case: str, overrides: Sequence[str]) -> dict[str, Any]:
    """The case tuned with the study's equal budget; a ConfigError if no trial completed."""
    tuned = study.tune(case, overrides)
    if not tuned["overrides"]:
        raise ConfigError(f"study {study.cfg.name}: no tuning trial of {case} completed; widen its search range.")
    return tuned


def tuning_summary(tuned: dict[str, Any]) -> dict[str, Any]:
    return {k: tuned[k] for k in ("best_params", "best_value", "metric", "n_trials", "budget", "trials")}


def judge(cfg: DictConfig, name: str, claim: DictConfig, a: list[dict], b: list[dict], **extra: Any) -> dict[str, Any]:
    """One claim's verdict from the runs of its two sides (`a` claimed better than `b`), paired by seed.

    A run that never reached eps counts its totals, a lower bound on its true value; a verdict such a
    bound could have produced wrongly (supported when `a` has censored runs, refuted when `b` has, either
    for an equivalence) becomes inconclusive."""
    metric = claim.metric
    by_seed = {r["seed"]: r for r in b}
    pairs = [(r, by_seed[r["seed"]]) for r in a if r["seed"] in by_seed]
    censored = tuple(sum(not pair[i].get("reached", True) for pair in pairs) for i in (0, 1))
    values = ([pair[i][metric] for pair in pairs] for i in (0, 1))
    judged = judge_claim(
        cfg, claim, *values, lower_is_better=metric in CONVEX_METRICS, bounds=BOUNDS[metric], censored=censored
    )
    return {
        "case": name,
        "statement": claim.statement,
        "metric": metric,
        "better": claim.better,
        "than": claim.than,
        **judged,
        **extra,
    }


# --- part A: batch 1, mini-batch and full batch on the convex problem ---------------------------------------


def curve_every(cfg: DictConfig, size: int | str) -> int:
    """Steps between the points of a plotted curve: one per `curve_every_examples` examples (at most one a step)."""
    return 1 if size == FULL else max(1, cfg.curve_every_examples // size)


def variant_overrides(cfg: DictConfig, size: int | str) -> list[str]:
    """The convex runs of one batch size."""
    # ++: sgd.yaml has no full_batch key, optimizers that run full batch by default (lbfgs) do
    return [*cfg.convex_train, "++optimizer.full_batch=true" if size == FULL else f"batch_size={size}"]


def convex_run(study: Study, variant: str, seed: int, overrides: list[str], every: int) -> dict[str, Any]:
    """One seed of one batch size: its DistanceClock numbers, also logged to its MLflow run as study/*."""
    clock = DistanceClock(float(study.cfg.eps), every)
    run = study.train(variant, f"seed{seed}", [*overrides, f"seed={seed}"], allow_diverged=True, callbacks=[clock])
    steps, examples, seconds = int(clock.curve[-1][0]), clock.examples, clock.seconds()
    reached = clock.reached or (steps, examples, seconds)
    run.update(
        seed=seed,
        steps=steps,
        epochs=clock.epochs,
        examples=examples,
        clock_s=seconds,
        steps_to_eps=reached[0],
        examples_to_eps=reached[1],
        seconds_to_eps=reached[2],
        reached=clock.reached is not None,
        final_dist=clock.curve[-1][3],
        curve=clock.curve,
    )
    now = int(time.time() * 1000)
    log_values(
        study.client,
        run["run_id"],
        metrics=[
            Metric(f"study/{key}", float(point[i]), now, int(point[0]))
            for point in clock.curve
            for i, key in ((1, "examples"), (2, "train_s"), (3, "dist_to_opt"))
        ],
    )
    return run


def measure_convex(study: Study) -> dict[str, dict]:
    """Part A: per batch size, its tuning and its runs on every evaluation seed, with means and intervals."""
    cfg = study.cfg
    results = {}
    for variant, size in batch_sizes(cfg).items():
        overrides, every = variant_overrides(cfg, size), curve_every(cfg, size)
        tuned = tuned_settings(study, variant, [*overrides, *cfg.convex_tune])
        tuned_overrides = [*overrides, *tuned["overrides"]]
        runs = [convex_run(study, variant, seed, tuned_overrides, every) for seed in seeds_of(cfg)]
        results[variant] = {
            "batch_size": size,
            "curve_every_n_steps": every,
            "tuned": tuning_summary(tuned),
            "runs": runs,
            "reached": sum(r["reached"] for r in runs),
            "diverged": sum(r.get("diverged", 0.0) > 0 for r in runs),
            **{m: mean_ci([r[m] for r in runs], float(cfg.confidence), BOUNDS[m]) for m in CONVEX_METRICS},
        }
    return results


# --- part B: the linear and square-root scaling rules against retuning --------------------------------------


def scaling_runs(study: Study, case: str, overrides: list[str], lr: float) -> dict[str, Any]:
    """One batch and learning rate of part B on every evaluation seed."""
    runs = []
    for seed in seeds_of(study.cfg):
        run = study.train(
            case, f"seed{seed}", [*overrides, f"optimizer.lr={lr!r}", f"seed={seed}"], allow_diverged=True
        )
        runs.append({"seed": seed, **run})
    return {
        "lr": lr,
        "runs": runs,
        "diverged": sum(r.get("diverged", 0.0) > 0 for r in runs),
        **{m: mean_ci([r[m] for r in runs], float(study.cfg.confidence), BOUNDS[m]) for m in SCALING_METRICS},
    }


def measure_scaling(study: Study) -> dict[str, dict]:
    """Part B: lr0 tuned at the base batch, then per factor k the three rules at batch k·base_batch."""
    cfg = study.cfg
    base_batch = cfg.base_batch
    base = [*cfg.scaling_train, f"batch_size={base_batch}"]
    base_tuned = tuned_settings(study, "base", [*base, *cfg.scaling_tune])
    lr0 = float(base_tuned["best_params"]["optimizer.lr"])
    results = {
        "base": {
            "factor": 1,
            "batch_size": base_batch,
            "tuned": tuning_summary(base_tuned),
            **scaling_runs(study, "base", base, lr0),
        }
    }
    for k in factors(cfg):
        overrides = [*cfg.scaling_train, f"batch_size={k * base_batch}"]
        retuned = tuned_settings(study, f"retuned_x{k}", [*overrides, *cfg.scaling_tune])
        lrs = {"linear": k * lr0, "sqrt": math.sqrt(k) * lr0, "retuned": retuned["best_params"]["optimizer.lr"]}
        rules = {rule: scaling_runs(study, f"{rule}_x{k}", overrides, lr) for rule, lr in lrs.items()}
        rules["retuned"]["tuned"] = tuning_summary(retuned)
        results[f"x{k}"] = {"factor": k, "batch_size": k * base_batch, "rules": rules}
    return results


# --- the kind -----------------------------------------------------------------------------------------------


class BatchSizeScaling:
    plot_name = "batch_size.png"

    def rule(self, cfg: DictConfig) -> str:
        return (
            f"per claim, the paired (same-seed) t-test over seeds {list(seeds_of(cfg))} of the first side's "
            f"advantage (fewer steps, examples or seconds to distance {cfg.eps:g}; higher test accuracy) against "
            f"the claim's margin (default {cfg.threshold:g}; equivalence claims by TOST within ±margin), shown with "
            f"its {cfg.confidence:.0%} interval; Holm-corrected over the study's claims: supported if the adjusted "
            f"p < {1 - cfg.confidence:g}, refuted if that of the opposite test is, else inconclusive. Runs that "
            "never reach eps count their totals (lower bounds); a verdict such a bound could have produced wrongly "
            "is inconclusive"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        check_config(cfg)
        convex, scaling = measure_convex(study), measure_scaling(study)
        cases = []
        for name, claim in cfg.claims.items():
            if claim.better in convex:
                cases.append(judge(cfg, name, claim, convex[claim.better]["runs"], convex[claim.than]["runs"]))
                continue
            for key, at in scaling.items():
                if key == "base":
                    continue
                a, b = (at["rules"][v]["runs"] for v in (claim.better, claim.than))
                cases.append(judge(cfg, f"{name}_{key}", claim, a, b, factor=at["factor"]))
        return {"cases": cases, "results": {"convex": convex, "scaling": scaling}}

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        lines = [
            f"Mean [{s['confidence']:.0%} t-interval, clipped to the metric's range] over seeds {s['seeds']}; a "
            "claim's advantage is paired by seed; every learning rate was tuned with "
            f"tuning seed {s['tune_seed']}, apart from the evaluation seeds.",
            "",
            "| claim | metric | advantage of the first [interval] | margin | verdict |",
            "|---|---|---|---|---|",
        ]
        for c in verdict["cases"]:
            factor = f", x{c['factor']}" if "factor" in c else ""
            lines.append(
                f"| {c['statement']} ({c['better']} vs {c['than']}{factor}) | {c['metric']} | "
                f"{fmt_ci(c['advantage'], '.4g')} | {c['test']} {c['margin']:g} | **{c['verdict']}** |"
            )
        return [*lines, "", *self._convex_table(verdict), "", *self._scaling_table(verdict)]

    @staticmethod
    def _convex_table(verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        lines = [
            f"### Part A: batch size on the convex problem (`{' '.join(s['convex_train'])}`)",
            "",
            f"Every batch size was tuned with the same budget (`{' '.join([*s['tune'], *s['convex_tune']])}`). "
            f"Reached: the distance to the known optimum fell to eps = {s['eps']:g}; a run that never does counts its "
            "totals (censored, a lower bound). Seconds are training seconds without validation, logging and the "
            "distance measurement.",
            "",
            "| variant | batch | tuned lr | steps to eps (reached) | examples to eps | seconds to eps | final distance "
            "| steps in all | diverged |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in verdict["results"]["convex"].items():
            lines.append(
                f"| {name} | {r['batch_size']} | {fmt(r['tuned']['best_params']['optimizer.lr'], '.3g')} | "
                f"{fmt_ci(r['steps_to_eps'], '.0f')} ({r['reached']}/{len(r['runs'])}) | "
                f"{fmt_ci(r['examples_to_eps'], '.0f')} | {fmt_ci(r['seconds_to_eps'], '.3f')} | "
                f"{fmt_ci(r['final_dist'], '.3g')} | {r['runs'][0]['steps']} | {r['diverged']}/{len(r['runs'])} |"
            )
        return lines

    @staticmethod
    def _scaling_table(verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        scaling = verdict["results"]["scaling"]
        base = scaling["base"]
        rows = [("1", "tuned", base)] + [
            (str(at["factor"]), rule, r)
            for key, at in scaling.items()
            if key != "base"
            for rule, r in at["rules"].items()
        ]
        lines = [
            f"### Part B: scaling the learning rate with the batch (`{' '.join(s['scaling_train'])}`)",
            "",
            f"lr0 = {base['lr']:.4g}, tuned at the base batch {base['batch_size']}; at k times that batch the linear "
            "rule takes k·lr0, the square-root rule √k·lr0, and retuned an lr tuned again with the same budget "
            f"(`{' '.join([*s['tune'], *s['scaling_tune']])}`).",
            "",
            "| batch (k) | rule | lr | test acc | best val acc | steps | diverged |",
            "|---|---|---|---|---|---|---|",
        ]
        for factor, rule, r in rows:
            batch = int(factor) * base["batch_size"]
            lines.append(
                f"| {batch} ({factor}) | {rule} | {r['lr']:.4g} | {fmt_ci(r['test_acc'])} | "
                f"{fmt_ci(r['val_acc_best'])} | {fmt(r['runs'][0].get('steps'), '.0f')} | "
                f"{r['diverged']}/{len(r['runs'])} |"
            )
        return lines

    def plot(self, verdict: dict[str, Any], path) -> None:
        fig, axes = subplots(2, 2, figsize=(12, 9))
        eps = verdict["settings"]["eps"]
        axis_names = ("optimizer steps", "examples processed", "training seconds")
        for ax, column, axis_name in zip(axes.flat[:3], (0, 1, 2), axis_names, strict=True):
            for colour, (name, r) in enumerate(verdict["results"]["convex"].items()):
                batch = "the whole training set" if r["batch_size"] == FULL else f"batch {r['batch_size']}"
                for i, run in enumerate(r["runs"]):
                    points = [(p[column], p[3]) for p in run["curve"] if p[column] > 0]  # log axes: no 0
                    ax.plot(
                        *zip(*points, strict=True),
                        color=f"C{colour}",
                        alpha=0.7,
                        lw=1,
                        label=f"{name} ({batch})" if i == 0 else None,
                    )
            ax.axhline(eps, color="black", linestyle=":", label=f"eps {eps:g}")
            ax.set(
                xscale="log",
                yscale="log",
                xlabel=axis_name,
                ylabel="distance to the optimum",
                title=f"least squares: distance against {axis_name}",
            )
        axes.flat[0].legend(fontsize=8, title="one line per seed", title_fontsize=8)
        self._plot_scaling(axes.flat[3], verdict["results"]["scaling"])
        save_figure(fig, path)

    @staticmethod
    def _plot_scaling(ax, scaling: dict[str, Any]) -> None:
        base = scaling["base"]
        at_k = [at for key, at in scaling.items() if key != "base"]
        sizes = np.array([base["batch_size"]] + [at["batch_size"] for at in at_k])
        for i, rule in enumerate(RULES):
            stats = [base["test_acc"]] + [at["rules"][rule]["test_acc"] for at in at_k]
            means = np.array([st["mean"] for st in stats])
            # the interval, clipped to the possible accuracies (two seeds give very wide ones)
            low, high = (np.array([st[end] for st in stats]) for end in ("low", "high"))
            low, high = (np.clip(np.where(np.isnan(v), means, v), 0, 1) for v in (low, high))
            ax.errorbar(
                sizes * (1 + 0.04 * (i - 1)), means, yerr=[means - low, high - means], marker="o", capsize=3, label=rule
            )
        ax.set(
            xscale="log",
            xlabel="batch size (the base batch is shared)",
            ylabel="test accuracy (mean, t-interval)",
            title="scaling the learning rate with the batch",
        )
        ax.minorticks_off()
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.legend(fontsize=8, title="rule", title_fontsize=8)
