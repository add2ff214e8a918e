"""Tuned comparisons (adam_vs_sgd, momentum, schedules): claims about which setup is better, settled fairly.

Every case (an optimizer, or an optimizer with a schedule) is first tuned with the same Optuna budget
(`tune`: optbench-tune overrides, identical for every case, seeded Sobol sampling from `tune_seed`), then
trained with its best settings once per evaluation seed (`seeds`, kept apart from the tuning seed so the
tuned settings are not scored on the run they were picked on). Per run the study measures:

    test_acc, val_acc_best   final test accuracy, best validation accuracy
    gap                      train accuracy (over the last epoch's batches) minus test accuracy
    steps_to_target          first step whose validation accuracy reaches `target`; a run that never does
                             is censored: its time is +inf (the run's length only bounds it), never averaged
    seconds_to_target        training seconds at that step (validation excluded), censored alike

and per case, from its tuning trials, the width of the good learning-rate range: log10(largest / smallest)
learning rate whose trial came within `good_lr_tolerance` of the best trial.

Every case runs on the same evaluation seeds, so each claim (a metric, the case claimed better, `better`,
and the one it beats, `than`) compares the two cases seed by seed (optbench.stats's policy): accuracies and
the gap by the paired t-test of the per-seed differences against the claim's `margin` (default:
`threshold`), their interval clipped to the metric's range; times to target by Wilcoxon's signed-rank test
with censored runs as +inf, the advantage being the difference of the Kaplan-Meier medians. The study's
claims are Holm-corrected together (studies.verdict.correct).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.stats import first_crossing, mean_ci, median_time_to_target
from optbench.studies.config import seeds_of, selected_cases
from optbench.studies.report import fmt, fmt_ci
from optbench.studies.runner import Study
from optbench.studies.verdict import judge_censored_claim, judge_claim

RUN_METRICS = ("test_acc", "val_acc_best", "gap", "steps_to_target", "seconds_to_target")
TIME_METRICS = ("steps_to_target", "seconds_to_target")  # censored: +inf for a run that never reaches the target
LOWER_IS_BETTER = {"steps_to_target", "seconds_to_target", "gap", "test_loss"}
BOUNDS = {"test_acc": (0.0, 1.0), "val_acc_best": (0.0, 1.0), "gap": (-1.0, 1.0)}
HORIZONS = {"steps_to_target": "steps", "seconds_to_target": "train_s"}  # where a censored run stopped


def case_overrides(cfg: DictConfig) -> dict[str, list[str]]:
    """The cases: `cases` (name -> {overrides}), or the product of `grid`, named option+option. `grid` maps
    a config group to its options: a list, or a mapping option -> extra overrides that option needs."""
    if not cfg.get("grid"):
        return {name: list(case.overrides) for name, case in cfg.cases.items()}
    axes = []
    for group, options in cfg.grid.items():
        extra = options if OmegaConf.is_dict(options) else {option: [] for option in options}
        axes.append([(option, [f"{group}={option}", *extra[option]]) for option in extra])
    return {
        "+".join(option for option, _ in choice): [o for _, overrides in choice for o in overrides]
        for choice in itertools.product(*axes)
    }


def to_target(study: Study, run: dict[str, Any], target: float) -> tuple[float, float, bool]:
    """(steps, seconds, reached) for one run's first validation accuracy >= target; a run that never gets
    there is censored: +inf for both (its length is in `steps` and `train_s`)."""
    step = first_crossing(study.history(run["run_id"], "val/acc"), target)
    if step is None:
        return math.inf, math.inf, False
    seconds = dict(study.history(run["run_id"], "time/train_s"))
    return step, seconds.get(int(step), math.nan), True


def good_lr_width(trials: list[dict[str, Any]], tolerance: float) -> float:
    """Decades of learning rate whose completed trials came within `tolerance` of the best one."""
    done = [t for t in trials if t["outcome"] == "completed" and t["value"] is not None and math.isfinite(t["value"])]
    if not done:
        return math.nan
    best = max(t["value"] for t in done)
    good = [t["params"]["optimizer.lr"] for t in done if t["value"] >= best - tolerance]
    return math.log10(max(good) / min(good))


def judge(cfg: DictConfig, name: str, claim: DictConfig, per_case: dict[str, dict]) -> dict[str, Any]:
    """The verdict of one claim from the per-seed values of its two cases."""
    for role in ("better", "than"):
        if claim[role] not in per_case:
            raise ConfigError(f"study {cfg.name}: claim {name} compares '{claim[role]}', which is not a case run.")
    metric = claim.metric
    if metric not in RUN_METRICS:
        raise ConfigError(
            f"study {cfg.name}: claim {name}: unknown metric {metric}. Metrics: {', '.join(RUN_METRICS)}."
        )
    than = {run["seed"]: run for run in per_case[claim.than]["runs"]}
    pairs = [(run, than[run["seed"]]) for run in per_case[claim.better]["runs"] if run["seed"] in than]
    a, b = ([pair[i][metric] for pair in pairs] for i in (0, 1))
    if metric in TIME_METRICS:
        horizons = ([pair[i].get(HORIZONS[metric], math.nan) for pair in pairs] for i in (0, 1))
        judged = judge_censored_claim(cfg, claim, a, b, *horizons)
    else:
        judged = judge_claim(cfg, claim, a, b, lower_is_better=metric in LOWER_IS_BETTER, bounds=BOUNDS.get(metric))
    return {
        "case": name,
        "statement": claim.statement,
        "metric": metric,
        "better": claim.better,
        "than": claim.than,
        "seeds": [pair[0]["seed"] for pair in pairs],
        **judged,
    }


def time_summary(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """A case's time to target over seeds: the Kaplan-Meier median (censored runs counted, not dropped)
    and how many runs reached the target."""
    times = [r[metric] for r in runs]
    return {
        "median": median_time_to_target(times, [r.get(HORIZONS[metric], math.nan) for r in runs]),
        "reached": sum(math.isfinite(t) for t in times),
        "n": len(runs),
    }


def search_space_lines(results: dict[str, Any]) -> list[str]:
    """Each case's search space and the spread of its replicated tuning studies' best values."""
    lines = [
        "",
        "| case | search space (log scale unless noted; 1 − x: sampled as 1 − x) | studies' best values: median [min, max] |",
        "|---|---|---|",
    ]
    for name, r in results.items():
        space = r["tuned"].get("space") or {}
        keys = []
        for key, spec in space.items():
            shown = key.removeprefix("optimizer.").removeprefix("scheduler.")
            if "choices" in spec:
                keys.append(f"{shown} ∈ {spec['choices']}")
                continue
            shown = f"1 − {shown}" if spec.get("transform") == "one_minus" else shown
            scale = "" if spec.get("log") else " (linear)"
            keys.append(f"{shown} ∈ [{spec['low']:.3g}, {spec['high']:.3g}]{scale}")
        studies = r["tuned"].get("studies") or {}
        spread = (
            f"{fmt(studies.get('median'), '.4f')} [{fmt(studies.get('min'), '.4f')}, {fmt(studies.get('max'), '.4f')}] "
            f"over {len(studies.get('per_study', []))} studies"
            if studies
            else "one study"
        )
        lines.append(f"| {name} | {'; '.join(keys)} | {spread} |")
    return lines


class TunedComparison:
    plot_name = "comparison.png"

    def rule(self, cfg: DictConfig) -> str:
        return (
            f"per claim, the cases compared seed by seed over seeds {list(seeds_of(cfg))}: accuracies and the gap "
            "by the paired t-test of the per-seed differences against the claim's margin (default "
            f"{cfg.threshold:g}; equivalence claims by TOST within ±margin), shown with its {cfg.confidence:.0%} "
            "interval; steps and seconds to target by Wilcoxon's signed-rank test with runs that never reach the "
            "target as +inf, the advantage being the difference of Kaplan-Meier medians (no interval). One-sided "
            f"p-values, Holm-corrected over the study's claims: supported if the adjusted p < {1 - cfg.confidence:g}, "
            "refuted if that of the opposite test is, else inconclusive; an exact tie on every seed refutes an "
            "advantage and supports an equivalence"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        cases = case_overrides(cfg)
        chosen = selected_cases(cfg)  # the same names as case_overrides', checked when the study loaded
        claims = {n: c for n, c in cfg.claims.items() if c.better in chosen and c.than in chosen}
        per_case: dict[str, dict] = {}
        for name in chosen:
            tuned = study.tune(name, cases[name])
            if not tuned["overrides"]:
                raise ConfigError(f"study {cfg.name}: no tuning trial of {name} completed; widen its search range.")
            runs = []
            for seed in seeds_of(cfg):
                run = study.train(
                    name, f"seed{seed}", [*cases[name], *tuned["overrides"], f"seed={seed}"], allow_diverged=True
                )
                run["seed"] = seed
                run["gap"] = run.get("train_acc", math.nan) - run.get("test_acc", math.nan)
                run["steps_to_target"], run["seconds_to_target"], run["reached"] = to_target(study, run, cfg.target)
                run["val_curve"] = study.history(run["run_id"], "val/acc")
                runs.append(run)
            per_case[name] = {
                "overrides": cases[name],
                "tuned": {
                    k: tuned.get(k) for k in ("best_params", "best_value", "n_trials", "budget", "space", "studies")
                },
                "trials": tuned["trials"],
                "good_lr_decades": good_lr_width(tuned["trials"], float(cfg.good_lr_tolerance)),
                "runs": runs,
                "reached": sum(r["reached"] for r in runs),
                "diverged": sum(r.get("diverged", 0.0) > 0 for r in runs),
                **{
                    metric: mean_ci([r[metric] for r in runs], float(cfg.confidence), BOUNDS[metric])
                    for metric in RUN_METRICS
                    if metric not in TIME_METRICS
                },
                **{metric: time_summary(runs, metric) for metric in TIME_METRICS},
            }
        return {
            "cases": [judge(cfg, name, claim, per_case) for name, claim in claims.items()],
            "results": per_case,
        }

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        results = verdict["results"]
        lines = [
            f"Every case was tuned with the same budget (`{' '.join(s['tune'])}`, tuning seed "
            f"{s.get('tune_seed', s['seed'])}), then trained with its best settings on seeds {s['seeds']}. "
            f"Mean [{s['confidence']:.0%} t-interval, clipped to the metric's range] over seeds; times to target: "
            "Kaplan-Meier median over seeds (a run that never reaches the target is censored, not averaged), with "
            f"how many reached it. Target validation accuracy {s['target']:g}. A claim's advantage is paired by "
            "seed; for a time, the difference of the medians (no interval).",
            "",
            "| claim | metric | advantage of the first [interval] | margin | verdict |",
            "|---|---|---|---|---|",
        ]
        for c in verdict["cases"]:
            lines.append(
                f"| {c['statement']} ({c['better']} vs {c['than']}) | {c['metric']} | "
                f"{fmt_ci(c['advantage'], '.4g')} | {c['test']} {c['margin']:g} | **{c['verdict']}** |"
            )
        lines += [
            "",
            "| case | tuned | test acc | best val acc | train−test gap | median steps to target (reached) | "
            "median seconds to target | good lr range (decades) | diverged |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results.items():
            tuned = ", ".join(
                f"{k.removeprefix('optimizer.').removeprefix('scheduler.')} {v:.3g}"
                for k, v in r["tuned"]["best_params"].items()
            )
            lines.append(
                f"| {name} | {tuned} | {fmt_ci(r['test_acc'])} | {fmt_ci(r['val_acc_best'])} | {fmt_ci(r['gap'])} | "
                f"{fmt(r['steps_to_target']['median'], '.0f')} ({r['reached']}/{len(r['runs'])}) | "
                f"{fmt(r['seconds_to_target']['median'], '.2f')} | {fmt(r['good_lr_decades'], '.2f')} | "
                f"{r['diverged']}/{len(r['runs'])} |"
            )
        return lines + search_space_lines(results)

    def plot(self, verdict: dict[str, Any], path) -> None:
        fig, (curves, trials) = subplots(1, 2, figsize=(12, 4.5))
        for name, r in verdict["results"].items():
            steps = sorted({step for run in r["runs"] for step, _ in run["val_curve"]})
            by_step = [[v for run in r["runs"] for s, v in run["val_curve"] if s == step] for step in steps]
            (line,) = curves.plot(steps, [np.mean(v) for v in by_step], label=name)
            curves.fill_between(
                steps, [min(v) for v in by_step], [max(v) for v in by_step], alpha=0.15, color=line.get_color()
            )
            done = [t for t in r["trials"] if t["value"] is not None and math.isfinite(t["value"])]
            trials.scatter(
                [t["params"]["optimizer.lr"] for t in done],
                [t["value"] for t in done],
                color=line.get_color(),
                s=18,
                label=name,
            )
        curves.axhline(verdict["settings"]["target"], color="black", linestyle=":", label="target")
        curves.set(xlabel="step", ylabel="val/acc (mean, min-max over seeds)", title="learning curves, tuned")
        trials.set(
            xscale="log",
            xlabel="learning rate",
            ylabel="tuning trial val/acc_best",
            title="equal-budget tuning: every trial",
        )
        curves.legend(fontsize=7, ncol=2)
        save_figure(fig, path)
