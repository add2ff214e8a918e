"""Mixed precision (precision): does it change the result, and does fp16 need loss scaling?

Every precision of `precisions` (32-true, the reference; bf16-mixed; 16-mixed, fp16 autocast with a dynamic
GradScaler; 16-mixed-unscaled, fp16 autocast without one) is trained on every seed in every gradient regime
of `regimes` (name -> k): the loss is multiplied by 2**-k and the learning rate by 2**k. For SGD and momentum
without weight decay that is the same run in exact arithmetic (powers of two scale exactly), with every
gradient 2**k times smaller, as in deep networks whose gradients fall below float16's range. Per run:

    test_acc, val_loss      final test accuracy and validation loss
    zero_grad               fraction of parameter-gradient entries exactly zero
    below_fp16_subnormal    fraction of the nonzero entries below 2**-24, the smallest float16: in the fp32
                            run, what fp16 without loss scaling would round to zero
    below_fp16_normal       fraction of the nonzero entries below 2**-14, where float16 turns subnormal and
                            keeps fewer significant bits
    loss scale, skipped     GradScaler's scale over training (MLflow history of amp/loss_scale) and the
                            steps it skipped on inf/NaN gradients

The gradient fractions are probed every `probe_every` optimizer steps, after backward and AMP unscaling, and
averaged over the probes. Each claim compares two precisions in one regime on one metric: the runs of a seed
share initialization and batch order, so the per-seed differences are tested paired (optbench.stats's
policy) against the claim's margin (default `threshold`): equivalence (TOST within ±margin) or advantage
(above the margin), Holm-corrected over the study's claims.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from optbench.core.config import compose_config, group_options
from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.stats import mean_ci
from optbench.studies.config import seeds_of
from optbench.studies.measures import device_of
from optbench.studies.report import fmt, fmt_ci
from optbench.studies.runner import Study
from optbench.studies.verdict import judge_claim

FP16_SUBNORMAL_MIN = 2.0**-24  # the smallest positive float16: a smaller magnitude rounds to zero
FP16_NORMAL_MIN = 2.0**-14  # below this, float16 is subnormal and loses significant bits
PROBES = ("zero_grad", "below_fp16_subnormal", "below_fp16_normal")
RUN_METRICS = ("test_acc", "val_loss")
LOWER_IS_BETTER = {"val_loss"}
BOUNDS = {"test_acc": (0.0, 1.0), "val_loss": (0.0, float("inf"))}
REFERENCE = "32-true"


# --- measuring ----------------------------------------------------------------------------------------------


def underflow_fractions(grads: list[torch.Tensor]) -> dict[str, float]:
    """Zero entries among all gradient entries; entries below fp16's smallest subnormal and normal among
    the nonzero ones (NaN when every entry is zero)."""
    total, counts = 0, torch.zeros(3, dtype=torch.float64, device=grads[0].device)
    for grad in grads:
        size = grad.detach().abs()
        nonzero = size > 0
        counts += torch.stack(
            [
                (~nonzero).sum(),
                (nonzero & (size < FP16_SUBNORMAL_MIN)).sum(),
                (nonzero & (size < FP16_NORMAL_MIN)).sum(),
            ]
        ).double()
        total += size.numel()
    zero, subnormal, normal = counts.tolist()  # one device sync per probe
    nonzero = total - zero
    return {
        "zero_grad": zero / total,
        "below_fp16_subnormal": subnormal / nonzero if nonzero else math.nan,
        "below_fp16_normal": normal / nonzero if nonzero else math.nan,
    }


def gradient_probe(every: int):
    """A Lightning callback recording underflow_fractions of the gradients every `every` optimizer steps."""
    from lightning.pytorch.callbacks import Callback  # slow to import; `optbench-study list` does not need it

    class GradientProbe(Callback):
        def __init__(self) -> None:
            self.probes: list[dict[str, float]] = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            # After backward and after AMP unscaling: the gradients the optimizer is about to use.
            if trainer.global_step % every == 0:
                grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
                if grads:
                    self.probes.append({"step": trainer.global_step, **underflow_fractions(grads)})

        def summary(self) -> dict[str, float]:
            return {
                key: float(np.nanmean([p[key] for p in self.probes])) if self.probes else math.nan for key in PROBES
            }

    return GradientProbe()


def regime_overrides(cfg: DictConfig, k: int) -> list[str]:
    """loss·2**-k and lr·2**k: the same SGD run with gradients 2**k times smaller (nothing for k = 0)."""
    if k == 0:
        return []
    optimizer = compose_config(*cfg.train).optimizer
    if optimizer._target_ != "torch.optim.SGD" or optimizer.weight_decay:
        raise ConfigError(
            f"study {cfg.name}: a gradient regime with k={k} multiplies the loss by 2**-{k} and the learning "
            f"rate by 2**{k}, which leaves the run unchanged only for SGD or momentum without weight decay; "
            f"optimizer={optimizer.name} (weight_decay {optimizer.weight_decay}) would train differently. Use "
            "optimizer=sgd, momentum or nesterov in `train`, or set every regime to 0."
        )
    return [f"loss_scale={2.0**-k!r}", f"optimizer.lr={optimizer.lr * 2.0**k!r}"]


def is_precision(name: str) -> bool:
    return name in group_options("precision")


def selected_precisions(cfg: DictConfig) -> list[str]:
    """`precisions`, checked: options of conf/precision, the fp32 reference among them."""
    precisions = list(cfg.precisions)
    unknown = [p for p in precisions if not is_precision(p)]
    if unknown:
        raise ConfigError(f"study {cfg.name}: unknown precisions {', '.join(unknown)} (see conf/precision/).")
    if REFERENCE not in precisions:
        raise ConfigError(f"study {cfg.name}: precisions must include the reference, {REFERENCE}.")
    return precisions


def selected_regimes(cfg: DictConfig) -> dict[str, int]:
    """The regimes of `run_cases` (default: all) with their k."""
    if not all(isinstance(k, int) and 0 <= k <= 40 for k in cfg.regimes.values()):
        raise ConfigError(
            f"study {cfg.name}: regimes maps names to integers k in [0, 40] (loss·2**-k), got {dict(cfg.regimes)}."
        )
    names = list(cfg.get("run_cases") or cfg.regimes)
    unknown = [n for n in names if n not in cfg.regimes]
    if unknown:
        raise ConfigError(f"study {cfg.name}: unknown regimes {', '.join(unknown)}. Regimes: {', '.join(cfg.regimes)}.")
    return {name: cfg.regimes[name] for name in names}


def train_precision(study: Study, regime: str, extra: list[str], precision: str, seed: int) -> dict[str, Any]:
    """One run: its final metrics, its gradient probes and its loss-scale trajectory."""
    probe = gradient_probe(int(study.cfg.probe_every))
    run = study.train(
        f"{regime}-{precision}",
        f"seed{seed}",
        [f"precision={precision}", *extra, f"seed={seed}"],
        allow_diverged=True,
        callbacks=[probe],
    )
    run.update(seed=seed, **probe.summary(), probes=probe.probes)
    run["loss_scale_curve"] = study.history(run["run_id"], "amp/loss_scale")
    return run


def summarize(runs: list[dict[str, Any]], confidence: float) -> dict[str, Any]:
    """One precision in one regime over its seeds."""
    return {
        "runs": runs,
        **{
            metric: mean_ci([r.get(metric, math.nan) for r in runs], confidence, BOUNDS[metric])
            for metric in RUN_METRICS
        },
        **{key: float(np.nanmean([r[key] for r in runs])) for key in PROBES},
        "loss_scale": loss_scale_range(runs),
        "skipped_steps": max((r.get("skipped_steps", 0.0) for r in runs), default=0.0),
        "diverged": sum(r.get("diverged", 0.0) > 0 for r in runs),
        "train_s": float(np.median([r.get("train_s", math.nan) for r in runs])),
    }


def loss_scale_range(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    """First and final loss scale (first seed) and the range over every seed; None without a GradScaler."""
    if "loss_scale" not in runs[0]:  # only fp16 runs have a scaler (a disabled one reports 1)
        return None
    scales = [v for run in runs for _, v in run["loss_scale_curve"]] + [run["loss_scale"] for run in runs]
    first = runs[0]["loss_scale_curve"][0][1] if runs[0]["loss_scale_curve"] else runs[0]["loss_scale"]
    return {"first": first, "last": runs[0]["loss_scale"], "min": min(scales), "max": max(scales)}


# --- judging ------------------------------------------------------------------------------------------------


def judge(cfg: DictConfig, name: str, claim: DictConfig, results: dict[str, dict]) -> dict[str, Any]:
    """The verdict of one claim from the paired per-seed differences of its two precisions."""
    a, b = claim.compare
    metric = claim.metric
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # positive when the first precision does better
    second = {run["seed"]: run for run in results[claim.regime][b]["runs"]}
    first = [run for run in results[claim.regime][a]["runs"] if run["seed"] in second]
    values = [run.get(metric, math.nan) for run in first], [second[run["seed"]].get(metric, math.nan) for run in first]
    judged = judge_claim(cfg, claim, *values, lower_is_better=metric in LOWER_IS_BETTER, bounds=BOUNDS[metric])
    return {
        "case": name,
        "statement": claim.statement,
        "regime": claim.regime,
        "compare": [a, b],
        "metric": claim.metric,
        "per_seed": [sign * (x - y) for x, y in zip(*values)],
        "difference": judged["advantage"],
        **judged,
    }


def runnable_claims(cfg: DictConfig, precisions: list[str], regimes: dict[str, int]) -> dict[str, DictConfig]:
    """The claims whose precisions and regime are run (smaller `precisions` or `run_cases` drop the others),
    each checked first."""
    for name, claim in cfg.claims.items():
        problem = None
        if claim.regime not in cfg.regimes:
            problem = f"regime {claim.regime} is not one of {', '.join(cfg.regimes)}"
        elif len(claim.compare) != 2 or not all(is_precision(p) for p in claim.compare):
            problem = f"compare must name two precisions of conf/precision, got {list(claim.compare)}"
        elif claim.metric not in RUN_METRICS:
            problem = f"metric {claim.metric} is not one of {', '.join(RUN_METRICS)}"
        elif claim.get("test", "advantage") not in ("advantage", "equivalence"):
            problem = f"test must be advantage or equivalence, got {claim.test}"
        if problem:
            raise ConfigError(f"study {cfg.name}: claim {name}: {problem}.")
    return {n: c for n, c in cfg.claims.items() if c.regime in regimes and all(p in precisions for p in c.compare)}


def skipped(device: str, results: dict[str, dict[str, dict]]) -> list[dict[str, str]]:
    """What these runs could not measure: speed on a CPU, and overflow when no run overflowed."""
    missing = []
    if device != "cuda":
        missing.append(
            {
                "what": "speed of bf16 and fp16 against fp32",
                "why": "the runs were on the CPU, where autocast has no tensor cores and the low-precision kernels are "
                "often slower than float32: a speedup measured here would say nothing about a GPU. The `gpu` "
                "preset (a CUDA GPU) reports each precision's training time relative to fp32.",
            }
        )
    scaled = [r for by_precision in results.values() for p, r in by_precision.items() if p == "16-mixed"]
    if scaled and all(r["skipped_steps"] == 0 for r in scaled):
        missing.append(
            {
                "what": "fp16 overflow",
                "why": "no 16-mixed run overflowed (0 skipped steps): the GradScaler's backing off on inf/NaN gradients "
                "was not exercised by this model; larger models (the `gpu` preset) may exercise it.",
            }
        )
    return missing


class PrecisionKind:
    plot_name = "precision.png"

    def rule(self, cfg: DictConfig) -> str:
        return (
            f"per claim, the paired (same-seed) t-test of the difference between two precisions over seeds "
            f"{list(seeds_of(cfg))}, shown with its {cfg.confidence:.0%} interval: an equivalence claim by TOST "
            f"within ±margin (default {cfg.threshold:g}), an advantage claim one-sided above the margin; Holm-"
            f"corrected over the study's claims: supported if the adjusted p < {1 - cfg.confidence:g}, refuted if "
            "that of the opposite test is, else inconclusive. An exact tie on every seed supports an equivalence "
            "and refutes an advantage; any other difference without spread is inconclusive"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        precisions, regimes, device = selected_precisions(cfg), selected_regimes(cfg), device_of(cfg)
        claims = runnable_claims(cfg, precisions, regimes)
        results: dict[str, dict[str, dict]] = {}
        for regime, k in regimes.items():
            extra = regime_overrides(cfg, k)
            results[regime] = {
                precision: summarize(
                    [train_precision(study, regime, extra, precision, seed) for seed in seeds_of(cfg)],
                    float(cfg.confidence),
                )
                for precision in precisions
            }
        return {
            "cases": [judge(cfg, name, claim, results) for name, claim in claims.items()],
            "results": results,
            "device": device,
            "skipped": skipped(device, results),
        }

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        regimes = ", ".join(f"{name} (k={s['regimes'][name]})" for name in verdict["results"])
        lines = [
            f"Every precision trained on seeds {s['seeds']} in each gradient regime: {regimes}; regime k multiplies "
            "the loss by 2^-k and the learning rate by 2^k, the same SGD run with gradients 2^k times smaller. "
            f"Mean [{s['confidence']:.0%} t-interval] over seeds; a claim's difference is paired by seed.",
            "",
            "| claim | regime | metric | difference, first − second [interval] | test, margin | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for c in verdict["cases"]:
            lines.append(
                f"| {c['statement']} ({c['compare'][0]} vs {c['compare'][1]}) | {c['regime']} | {c['metric']} | "
                f"{fmt_ci(c['difference'], '.4f')} | {c['test']} {c['margin']:g} | **{c['verdict']}** |"
            )
        on_gpu = verdict["device"] == "cuda"
        lines += [
            "",
            "Gradient entries (parameter gradients after unscaling, probed every "
            f"{s['probe_every']} steps): zero; and among the nonzero, below 2^-24 (fp16 rounds them to zero) and "
            "below 2^-14 (fp16 subnormal). In the fp32 run these are what fp16 without loss scaling would lose.",
            "",
            "| regime | precision | test acc | val loss | zero grads | < 2^-24 | < 2^-14 | loss scale first → last "
            "(min–max) | skipped steps | diverged |" + (" train s (× fp32) |" if on_gpu else ""),
            "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if on_gpu else ""),
        ]
        for regime, by_precision in verdict["results"].items():
            reference = by_precision[REFERENCE]["train_s"]
            for precision, r in by_precision.items():
                scale = r["loss_scale"]
                shown = (
                    f"{scale['first']:g} → {scale['last']:g} ({scale['min']:g}–{scale['max']:g})" if scale else "none"
                )
                timing = f" {fmt(r['train_s'], '.1f')} ({fmt(r['train_s'] / reference, '.2f')}) |" if on_gpu else ""
                lines.append(
                    f"| {regime} | {precision} | {fmt_ci(r['test_acc'])} | {fmt_ci(r['val_loss'])} | "
                    f"{fmt(r['zero_grad'], '.4f')} | {fmt(r['below_fp16_subnormal'], '.4f')} | "
                    f"{fmt(r['below_fp16_normal'], '.4f')} | {shown} | {r['skipped_steps']:g} | "
                    f"{r['diverged']}/{len(r['runs'])} |{timing}"
                )
        return lines

    def plot(self, verdict: dict[str, Any], path) -> None:
        results = verdict["results"]
        fig, axes = subplots(1, 3, figsize=(16, 4.5))
        precisions = list(next(iter(results.values())))
        colors = {p: f"C{i}" for i, p in enumerate(precisions)}
        _plot_accuracy(axes[0], results, colors)
        for i, (regime, by_precision) in enumerate(results.items()):
            style = ["-", "--", ":", "-."][i % 4]  # one line style per regime, one color per precision
            _plot_underflow(axes[1], regime, by_precision, colors, style)
            for precision, r in by_precision.items():
                if r["runs"][0]["loss_scale_curve"]:
                    axes[2].plot(
                        *zip(*r["runs"][0]["loss_scale_curve"]),
                        style,
                        color=colors[precision],
                        label=f"{regime}: {precision}",
                    )
        axes[1].set(
            xlabel="step",
            ylabel="fraction of gradient entries (first seed)",
            ylim=(-0.02, 1.02),
            title="fp32 gradients below fp16's range; fp16-unscaled zeros",
        )
        axes[2].set(xlabel="step", ylabel="loss scale", yscale="log", title="GradScaler loss scale (first seed)")
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        save_figure(fig, path)


def _plot_accuracy(ax, results: dict[str, dict], colors: dict[str, str]) -> None:
    """Grouped bars: one group per regime, one bar (mean) per precision, a dot per seed."""
    width = 0.8 / len(colors)
    for i, by_precision in enumerate(results.values()):
        for j, (precision, r) in enumerate(by_precision.items()):
            x = i + (j - (len(colors) - 1) / 2) * width
            values = [run.get("test_acc", math.nan) for run in r["runs"]]
            ax.bar(x, np.nanmean(values), width, color=colors[precision], label=precision if i == 0 else None)
            ax.scatter([x] * len(values), values, color="black", s=8, zorder=3)
    every = [run.get("test_acc", math.nan) for b in results.values() for r in b.values() for run in r["runs"]]
    ax.set_ylim(max(0.0, float(np.nanmin(every)) - 0.05), 1.0)
    ax.set(
        xticks=range(len(results)),
        xticklabels=list(results),
        ylabel="test accuracy (bar: mean, dots: seeds)",
        title="test accuracy per precision",
    )


def _plot_underflow(ax, regime: str, by_precision: dict[str, dict], colors: dict[str, str], style: str) -> None:
    """What fp16 would lose (fp32 entries below 2^-24) and what it did lose (fp16-unscaled zeros), per step."""
    for precision, key, what in (
        (REFERENCE, "below_fp16_subnormal", "< 2^-24"),
        ("16-mixed-unscaled", "zero_grad", "zero"),
    ):
        if precision in by_precision:
            probes = by_precision[precision]["runs"][0]["probes"]
            ax.plot(
                [p["step"] for p in probes],
                [p[key] for p in probes],
                style,
                color=colors[precision],
                label=f"{regime}: {precision} {what}",
            )
