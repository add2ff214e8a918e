"""warmup_stability: does a linear warmup let Adam train at a larger learning rate?

Each arm of `arms` (name -> optbench-train overrides; `baseline` names the one without warmup) trains at
every learning rate of the log-spaced grid `lrs`, on every seed of `seeds`, for the same steps. A run is
stable if it did not diverge (no NaN or infinite loss) and its final `loss_metric` is at most
`loss_threshold`; per arm and seed the study takes the largest stable learning rate of the grid. The claim:
for each other arm, the ratio of its largest stable lr to the baseline's, on every seed, exceeds
`threshold`.

This is a grid measure without a sampling distribution (the grid resolves only its own steps, so every
seed can give the same ratio, where a t-interval is undefined), judged as the grad_clipping study judges
its stable range: supported if the geometric mean of the per-seed ratios and the ratio
on every seed exceed the margin, refuted if none does, else inconclusive. The grid's edges bound what it
can show: where the warmup arm is stable at the grid's largest lr, its limit may lie above the grid, the
ratio is only a lower bound, and a "refuted" becomes inconclusive; where an arm has no stable lr at all,
the grid says nothing. (A baseline stable at the grid's top leaves no room for a ratio above 1: refuted,
and inconclusive by the first rule if the warmup arm is stable there too.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from omegaconf import DictConfig

from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.stats import INCONCLUSIVE, REFUTED, SUPPORTED, mean_ci
from optbench.studies.config import seeds_of
from optbench.studies.report import fmt, fmt_ci
from optbench.studies.runner import FINAL_METRICS, Study


def grid_of(cfg: DictConfig) -> list[float]:
    lrs = [float(v) for v in cfg.lrs]
    if len(lrs) < 2 or any(not (math.isfinite(v) and v > 0) for v in lrs) or lrs != sorted(set(lrs)):
        raise ConfigError(f"study {cfg.name}: lrs must be at least two increasing positive numbers, got {lrs}.")
    return lrs


def check_config(cfg: DictConfig) -> None:
    """Every check that can run before the first training run."""
    grid_of(cfg)
    if cfg.baseline not in cfg.arms or len(cfg.arms) < 2:
        raise ConfigError(
            f"study {cfg.name}: baseline ({cfg.baseline}) must be one of at least two arms ({', '.join(cfg.arms)})."
        )
    if cfg.loss_metric not in FINAL_METRICS or "loss" not in cfg.loss_metric:
        raise ConfigError(
            f"study {cfg.name}: loss_metric {cfg.loss_metric} is not a final metric; use one of "
            f"{', '.join(k for k in FINAL_METRICS if 'loss' in k)}."
        )
    if not (isinstance(cfg.loss_threshold, (int, float)) and cfg.loss_threshold > 0):
        raise ConfigError(f"study {cfg.name}: loss_threshold must be a positive number, got {cfg.loss_threshold!r}.")
    if not cfg.threshold >= 1:
        raise ConfigError(
            f"study {cfg.name}: threshold (the claimed ratio of largest stable learning rates) must be at least 1, "
            f"got {cfg.threshold!r}."
        )


def is_stable(run: dict[str, Any], loss_metric: str, threshold: float) -> bool:
    """Not diverged, and a finite final loss at most `threshold`."""
    loss = run.get(loss_metric, math.nan)
    return run.get("diverged", 0.0) == 0 and math.isfinite(loss) and loss <= threshold


def largest_stable(stable: dict[float, bool]) -> float:
    """The largest learning rate whose run was stable; 0 if none was."""
    return max((lr for lr, ok in stable.items() if ok), default=0.0)


def every_seed(value: float, per_seed: list[float], margin: float) -> tuple[str, str]:
    """(verdict, reason) of "the ratio exceeds `margin`": supported if the geometric mean and every seed's
    ratio do, refuted if none does, else inconclusive (the seeds disagree). The grad_clipping study's rule
    for its grid measure (sweeps.unanimous), restated here so this kind stands on its own."""
    above = [v > margin for v in (value, *per_seed)]
    if all(above):
        return SUPPORTED, "above the margin on every seed and in the geometric mean"
    if not any(above):
        return REFUTED, "at or below the margin on every seed and in the geometric mean"
    return INCONCLUSIVE, "the seeds disagree"


def judge_ratio(arm: dict[float, list[bool]], baseline: dict[float, list[bool]], margin: float) -> dict[str, Any]:
    """The claim "the arm's largest stable lr exceeds the baseline's by more than `margin` times" from the
    stability of every (lr, seed) run of both (lr -> one flag per seed, in seed order)."""
    top = max(baseline)
    n = len(next(iter(baseline.values())))
    largest = {
        side: [largest_stable({lr: flags[i] for lr, flags in runs.items()}) for i in range(n)]
        for side, runs in (("arm", arm), ("baseline", baseline))
    }
    pairs = list(zip(largest["arm"], largest["baseline"], strict=True))
    result = {"largest_stable": largest, "margin": margin, "top_lr": top}
    if any(b == 0 for _, b in pairs) or any(a == 0 for a, _ in pairs):
        return {
            **result,
            "value": math.nan,
            "per_seed": [a / b if b else math.nan for a, b in pairs],
            "verdict": INCONCLUSIVE,
            "reason": "no learning rate of the grid was stable on some seed: lower the grid's smallest lr",
        }
    ratios = [a / b for a, b in pairs]
    value = float(math.exp(np.mean(np.log(ratios))))  # the geometric mean: ratios multiply
    verdict, reason = every_seed(value, ratios, margin)
    if verdict == REFUTED and any(a >= top for a, _ in pairs):
        verdict, reason = INCONCLUSIVE, "the warmup arm was stable at the grid's largest lr: extend the grid upward"
    return {**result, "value": value, "per_seed": ratios, "verdict": verdict, "reason": reason}


class WarmupStability:
    plot_name = "stability.png"
    correction_why = "the claim is a grid measure decided without a statistical test (every seed must agree)"

    def rule(self, cfg: DictConfig) -> str:
        return (
            f"a run is stable if it does not diverge and its final {cfg.loss_metric} is at most "
            f"{cfg.loss_threshold:g}; per arm and seed (seeds {list(seeds_of(cfg))}) the largest stable lr of the "
            f"grid {list(grid_of(cfg))}; per arm against {cfg.baseline}, the ratio of the two: supported if it "
            f"exceeds {cfg.threshold:g} on every seed and in the geometric mean over seeds, refuted if it does on "
            "none, else inconclusive; also inconclusive when an arm has no stable lr, or when a refutation could "
            "be an artefact of the grid's top (the other arm stable at the largest lr)"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        check_config(cfg)
        lrs, seeds = grid_of(cfg), seeds_of(cfg)
        threshold = float(cfg.loss_threshold)
        sweep: dict[str, list[dict[str, Any]]] = {}
        for arm, overrides in cfg.arms.items():
            sweep[arm] = []
            for lr in lrs:
                runs = [
                    study.train(
                        arm,
                        f"lr{lr:g}-s{seed}",
                        [*overrides, f"optimizer.lr={lr!r}", f"seed={seed}"],
                        allow_diverged=True,
                    )
                    for seed in seeds
                ]
                losses = [r.get(cfg.loss_metric, math.nan) for r in runs]
                sweep[arm].append(
                    {
                        "lr": lr,
                        "stable": [is_stable(r, cfg.loss_metric, threshold) for r in runs],
                        "diverged": [bool(r.get("diverged", 0.0) > 0) for r in runs],
                        "losses": [loss if math.isfinite(loss) else None for loss in losses],
                        "loss": mean_ci(losses, float(cfg.confidence), (0.0, math.inf)),
                        "test_acc": mean_ci([r.get("test_acc", math.nan) for r in runs], float(cfg.confidence), (0, 1)),
                        "run_ids": [r["run_id"] for r in runs],
                    }
                )
        flags = {arm: {p["lr"]: p["stable"] for p in points} for arm, points in sweep.items()}
        cases = []
        for arm in cfg.arms:
            if arm == cfg.baseline:
                continue
            judged = judge_ratio(flags[arm], flags[cfg.baseline], float(cfg.threshold))
            cases.append(
                {
                    "case": f"{arm}_raises_stable_lr",
                    "statement": f"{arm} trains stably at a larger learning rate than {cfg.baseline}",
                    "arm": arm,
                    **judged,
                }
            )
        return {"cases": cases, "sweep": sweep}

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        seeds = s["seeds"]
        lines = [
            f"Stable: no divergence and a final {s['loss_metric']} <= {s['loss_threshold']:g}. Seeds {seeds} at "
            f"every learning rate; arms: " + "; ".join(f"{arm} `{' '.join(o)}`" for arm, o in s["arms"].items()) + ".",
            "",
            "| claim | largest stable lr per seed (arm / baseline) | ratio: geometric mean (per seed) | verdict |",
            "|---|---|---|---|",
        ]
        for c in verdict["cases"]:
            largest = ", ".join(
                f"{fmt(a, '.3g')} / {fmt(b, '.3g')}"
                for a, b in zip(c["largest_stable"]["arm"], c["largest_stable"]["baseline"], strict=True)
            )
            per_seed = ", ".join(fmt(r, ".3g") for r in c["per_seed"])
            reason = f"; {c['reason']}" if c.get("reason") else ""
            lines.append(
                f"| {c['statement']} | {largest} | {fmt(c['value'], '.3g')} ({per_seed}); margin {c['margin']:g} "
                f"| **{c['verdict']}**{reason} |"
            )
        arms = list(verdict["sweep"])
        lines += [
            "",
            "| lr | " + " | ".join(f"{arm}: stable seeds, {s['loss_metric']}, test acc" for arm in arms) + " |",
            "|---|" + "---|" * len(arms),
        ]
        for i, point in enumerate(verdict["sweep"][arms[0]]):
            cells = []
            for arm in arms:
                p = verdict["sweep"][arm][i]
                diverged = f" ({sum(p['diverged'])} diverged)" if any(p["diverged"]) else ""
                cells.append(
                    f"{sum(p['stable'])}/{len(p['stable'])}{diverged}, {fmt_ci(p['loss'], '.3f')}, "
                    f"{fmt(p['test_acc']['mean'], '.3f')}"
                )
            lines.append(f"| {point['lr']:g} | " + " | ".join(cells) + " |")
        return lines

    def plot(self, verdict: dict[str, Any], path) -> None:
        s = verdict["settings"]
        fig, (loss, share) = subplots(1, 2, figsize=(11, 4.2))
        for i, (arm, points) in enumerate(verdict["sweep"].items()):
            lrs = [p["lr"] for p in points]
            n = len(points[0]["losses"])
            for seed in range(n):
                # a diverged run has no loss: drawn at the top of the axis, where the sweep broke
                ys = [p["losses"][seed] if p["losses"][seed] is not None else np.nan for p in points]
                loss.plot(lrs, ys, color=f"C{i}", alpha=0.6, marker="o", lw=1, label=arm if seed == 0 else None)
            share.plot(lrs, [sum(p["stable"]) / n for p in points], color=f"C{i}", marker="o", label=arm)
        loss.axhline(s["loss_threshold"], color="black", linestyle=":", label="threshold")
        loss.set(
            xscale="log", yscale="log", xlabel="learning rate", ylabel=f"final {s['loss_metric']} (one line a seed)"
        )
        loss.set_title("final loss over the learning-rate grid")
        share.set(xscale="log", xlabel="learning rate", ylabel="fraction of seeds stable", ylim=(-0.05, 1.05))
        share.set_title("stable runs")
        loss.legend(fontsize=8)
        share.legend(fontsize=8)
        save_figure(fig, path)
