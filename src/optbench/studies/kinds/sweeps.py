"""Sweep studies: one setting swept over a grid, with and without the ingredient the claim is about.

adamw_vs_adam_l2   Adam with L2 (coupled decay) against AdamW (decoupled) over learning rate x weight
                   decay: are they the same update, which reaches the better accuracy, and how far the
                   best weight decay moves when the learning rate changes
grad_clipping      a learning-rate sweep with and without gradient-norm clipping: divergence rate,
                   largest stable learning rate and accuracy
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from omegaconf import DictConfig
from scipy import stats

from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.stats import INCONCLUSIVE, REFUTED, SUPPORTED, decide, mean_ci
from optbench.studies.config import seeds_of
from optbench.studies.measures import EQUIVALENT, NOT_EQUIVALENT, relative_distance, verdict_of
from optbench.studies.report import fmt, fmt_ci
from optbench.studies.runner import Study
from optbench.studies.verdict import judge_claim

ACCURACY = (0.0, 1.0)


def _positive_list(cfg: DictConfig, key: str, allow_zero: bool = False) -> list[float]:
    values = [float(v) for v in cfg[key]]
    if not values or any(v < 0 or (v == 0 and not allow_zero) for v in values):
        raise ConfigError(f"study {cfg.name}: {key} must be a non-empty list of positive numbers, got {values}.")
    return values


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "state"}


def unanimous(value: float, per_seed: list[float], margin: float) -> tuple[str, str]:
    """(verdict, reason) of "`value` exceeds `margin`" for a grid measure without a sampling distribution:
    supported if it does on the seed-averaged grid and on every seed alone, refuted if it does on none of
    them, else inconclusive (the seeds disagree; more seeds or a finer grid would tell)."""
    above = [v > margin for v in (value, *per_seed)]
    if all(above):
        return SUPPORTED, "above the margin on the seed-averaged grid and on every seed"
    if not any(above):
        return REFUTED, "at or below the margin on the seed-averaged grid and on every seed"
    return INCONCLUSIVE, "the seeds disagree"


def stable_range_verdict(stable: dict[str, float], top: float) -> tuple[str, str]:
    """(verdict, reason) of "clipping raises the largest learning rate of the sweep with no diverged seed"
    (`stable`: that rate per variant, 0 if none; `top`: the sweep's largest rate). The grid resolves only
    its own steps: equal rates, a sweep that never made unclipped runs diverge, or no stable rate on either
    side say nothing either way."""
    if stable["no_clip"] >= top:
        return INCONCLUSIVE, "unclipped runs never diverged in the sweep: it does not reach their limit"
    if stable["clip"] == stable["no_clip"] == 0:
        return INCONCLUSIVE, "every learning rate diverged on some seed either way"
    if stable["clip"] > stable["no_clip"]:
        return SUPPORTED, "clipped runs stay stable at a larger learning rate of the sweep"
    if stable["clip"] < stable["no_clip"]:
        return REFUTED, "clipped runs diverge at a learning rate where unclipped ones did not"
    return INCONCLUSIVE, "the same largest stable learning rate on this grid; a finer grid could separate them"


# --- AdamW against Adam with L2 -----------------------------------------------------------------------------


class AdamwVsAdamL2:
    """Same-update check (float64 distance), then a seeded lr x weight-decay grid for both optimizers."""

    plot_name = "grid.png"

    def rule(self, cfg: DictConfig) -> str:
        return (
            f"same update: {EQUIVALENT} if the relative parameter distance < {cfg.threshold:g}; best accuracy: "
            f"the paired (same-seed) t-test of AdamW's test-accuracy advantage at its best grid cell over "
            f"Adam-L2's at its own (cells chosen by validation accuracy) against {cfg.acc_margin:g}, one-sided, "
            f"shown with its {cfg.confidence:.0%} interval, Holm-corrected over the study's tested claims "
            f"(a family of one): supported if the adjusted p < {1 - cfg.confidence:g}, refuted if that of the "
            "opposite test is, else inconclusive; weight-decay coupling (no test, a grid measure): the best weight "
            f"decay (the largest within {cfg.wd_tolerance:g} of the row's best validation accuracy) of Adam-L2 must "
            f"move by more than {cfg.shift_margin:g} decades more than AdamW's across the learning rates, on the "
            "seed-averaged grid and on every seed alone: supported if so, refuted if it moves no more than that on "
            "every seed and on average, else inconclusive"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        lrs, wds = _positive_list(cfg, "lrs"), _positive_list(cfg, "weight_decays", allow_zero=True)
        cases = self._same_update(study)
        grid = {name: self._grid(study, name, lrs, wds) for name in ("adam_l2", "adamw")}
        best = {name: max(cells, key=lambda c: c["val_acc_best"]["mean"]) for name, cells in grid.items()}
        claim = DictConfig({"margin": float(cfg.acc_margin)})
        a, b = best["adamw"]["test_accs"], best["adam_l2"]["test_accs"]  # the same seeds, in order
        cases.append(
            {
                "case": "adamw_more_accurate",
                "statement": "AdamW's best grid cell beats Adam-L2's best (test accuracy)",
                **judge_claim(cfg, claim, a, b, lower_is_better=False, bounds=ACCURACY),
            }
        )
        tolerance = float(cfg.wd_tolerance)
        shift = {name: self._best_wd_shift(cells, lrs, tolerance) for name, cells in grid.items()}
        moved = shift["adam_l2"]["decades"] - shift["adamw"]["decades"]
        per_seed = [
            self._best_wd_shift(grid["adam_l2"], lrs, tolerance, seed)["decades"]
            - self._best_wd_shift(grid["adamw"], lrs, tolerance, seed)["decades"]
            for seed in range(len(seeds_of(cfg)))
        ]
        verdict, reason = unanimous(moved, per_seed, float(cfg.shift_margin))
        cases.append(
            {
                "case": "adamw_decouples_decay",
                "statement": "the best weight decay moves less with the learning rate for AdamW than for Adam-L2",
                "value": moved,
                "per_seed": per_seed,
                "margin": float(cfg.shift_margin),
                "verdict": verdict,
                "reason": reason,
            }
        )
        return {"cases": cases, "grid": grid, "best": best, "best_wd": shift}

    def _same_update(self, study: Study) -> list[dict[str, Any]]:
        """Adam(weight_decay=wd) against AdamW(wd) in float64 for `exact_steps` steps; wd = 0 is the control."""
        cfg = study.cfg
        common = [
            *cfg.exact_train,
            f"trainer.max_steps={cfg.exact_steps}",
            "trainer.max_epochs=-1",
            f"optimizer.lr={cfg.exact_lr}",
        ]
        cases = []
        for name, wd, expected in (
            ("same_without_decay", 0.0, EQUIVALENT),
            ("same_with_decay", cfg.exact_wd, NOT_EQUIVALENT),
        ):
            runs = {
                opt: study.train(
                    name,
                    opt,
                    [*common, f"optimizer={opt}", f"optimizer.weight_decay={wd}", "optimizer.no_decay_bias_norm=false"],
                    keep_params=True,
                )
                for opt in ("adam", "adamw")
            }
            distance = relative_distance(runs["adam"]["state"], runs["adamw"]["state"])
            cases.append(
                {
                    "case": name,
                    "statement": f"Adam with L2 {wd:g} takes the same steps as AdamW with decay {wd:g}",
                    "value": distance,
                    "distance": distance,
                    "verdict": verdict_of(distance, float(cfg.threshold)),
                    "expected": expected,
                    "runs": {k: _strip(v) for k, v in runs.items()},
                }
            )
        return cases

    def _grid(self, study: Study, name: str, lrs: list[float], wds: list[float]) -> list[dict[str, Any]]:
        optimizer = {"adam_l2": "adam", "adamw": "adamw"}[name]
        cells = []
        for lr in lrs:
            for wd in wds:
                runs = [
                    study.train(
                        name,
                        f"lr{lr:g}-wd{wd:g}-s{seed}",
                        [
                            f"optimizer={optimizer}",
                            f"optimizer.lr={lr}",
                            f"optimizer.weight_decay={wd}",
                            f"seed={seed}",
                        ],
                        allow_diverged=True,
                    )
                    for seed in seeds_of(study.cfg)
                ]
                cells.append(
                    {
                        "lr": lr,
                        "weight_decay": wd,
                        "val_acc_best": mean_ci(
                            [r["val_acc_best"] for r in runs], float(study.cfg.confidence), ACCURACY
                        ),
                        "test_acc": mean_ci([r["test_acc"] for r in runs], float(study.cfg.confidence), ACCURACY),
                        "test_accs": [r["test_acc"] for r in runs],
                        "val_accs": [r["val_acc_best"] for r in runs],
                        "run_ids": [r["run_id"] for r in runs],
                    }
                )
        return cells

    @staticmethod
    def _best_wd_shift(
        cells: list[dict[str, Any]], lrs: list[float], tolerance: float, seed: int | None = None
    ) -> dict[str, Any]:
        """At each learning rate the best weight decay: the largest one whose validation accuracy (the mean
        over seeds, or that of the `seed`-th seed alone) is within `tolerance` of that row's best. Where
        accuracy is flat in the decay (a small problem), a plain argmax would pick seed noise; the largest
        decay the learning rate tolerates is well defined either way. A best decay of 0 counts as the grid's
        smallest non-zero decay / 10 in the span, in decades."""
        nonzero = [c["weight_decay"] for c in cells if c["weight_decay"] > 0]
        floor = min(nonzero) / 10 if nonzero else 1.0

        def acc(cell: dict[str, Any]) -> float:
            return cell["val_acc_best"]["mean"] if seed is None else cell["val_accs"][seed]

        best = {}
        for lr in lrs:
            row = [c for c in cells if c["lr"] == lr]
            top = max(acc(c) for c in row)
            best[lr] = max(c["weight_decay"] for c in row if acc(c) >= top - tolerance)
        logs = [math.log10(max(wd, floor)) for wd in best.values()]
        return {"best_wd_per_lr": {f"{lr:g}": wd for lr, wd in best.items()}, "decades": max(logs) - min(logs)}

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        lines = ["| check | statement | number | verdict | expected |", "|---|---|---|---|---|"]
        for c in verdict["cases"]:
            number = fmt(c["value"]) if "advantage" not in c else fmt_ci(c["advantage"], ".4f")
            number += f" ({c['reason']})" if c.get("reason") else ""
            lines.append(
                f"| {c['case']} | {c['statement']} | {number} | **{c['verdict']}** | {c.get('expected', '')} |"
            )
        lines += [
            "",
            f"Grid: validation accuracy (mean over seeds {s['seeds']}), rows learning rate, columns "
            "weight decay; test accuracy of each optimizer's best cell below.",
            "",
        ]
        for name, cells in verdict["grid"].items():
            wds = sorted({c["weight_decay"] for c in cells})
            lines += [
                f"**{name}**",
                "",
                "| lr \\ wd | " + " | ".join(f"{wd:g}" for wd in wds) + " |",
                "|---|" + "---|" * len(wds),
            ]
            for lr in sorted({c["lr"] for c in cells}):
                row = {c["weight_decay"]: c for c in cells if c["lr"] == lr}
                lines.append(
                    f"| {lr:g} | " + " | ".join(fmt(row[wd]["val_acc_best"]["mean"], ".4f") for wd in wds) + " |"
                )
            best, shift = verdict["best"][name], verdict["best_wd"][name]
            lines += [
                "",
                f"Best cell lr {best['lr']:g}, wd {best['weight_decay']:g}: test accuracy "
                f"{fmt_ci(best['test_acc'])}. Best wd per lr: {shift['best_wd_per_lr']} "
                f"(spans {shift['decades']:.2f} decades).",
                "",
            ]
        return lines

    def plot(self, verdict: dict[str, Any], path) -> None:
        fig, axes = subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for ax, (name, cells) in zip(axes, verdict["grid"].items(), strict=True):
            wds = sorted({c["weight_decay"] for c in cells})
            for lr in sorted({c["lr"] for c in cells}):
                row = {c["weight_decay"]: c for c in cells if c["lr"] == lr}
                ax.plot(
                    range(len(wds)), [row[wd]["val_acc_best"]["mean"] for wd in wds], marker="o", label=f"lr {lr:g}"
                )
            ax.set_xticks(range(len(wds)), [f"{wd:g}" for wd in wds])
            ax.set(title=name, xlabel="weight decay", ylabel="val/acc_best (mean over seeds)")
            ax.legend(fontsize=8)
        save_figure(fig, path)


# --- gradient clipping --------------------------------------------------------------------------------------


class GradClipping:
    """A learning-rate sweep, each lr on every seed, without clipping and with gradient-norm clipping."""

    plot_name = "sweep.png"

    def rule(self, cfg: DictConfig) -> str:
        return (
            "fewer divergences: one-sided Fisher exact tests on the divergence counts over the sweep (clipping "
            "diverges less; the opposite, more); no cost: at the best unclipped lr, the paired (same-seed) TOST of "
            f"the test-accuracy difference within ±{cfg.threshold:g}, shown with its {cfg.confidence:.0%} "
            "interval. Both Holm-corrected together: supported if the adjusted p of the claim's test < "
            f"{1 - cfg.confidence:g}, refuted if that of the opposite test is, else inconclusive (an exact tie on "
            "every seed supports no cost). Stable range (no test, a grid measure): supported if the largest "
            "learning rate with no diverged seed is larger with clipping, refuted if smaller, inconclusive if "
            "equal on the grid, if the sweep never made unclipped runs diverge, or if no rate is stable"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        lrs = sorted(_positive_list(cfg, "lrs"))
        variants = {
            "no_clip": ["trainer.gradient_clip_val=null"],
            "clip": [f"trainer.gradient_clip_val={cfg.clip_norm}", "trainer.gradient_clip_algorithm=norm"],
        }
        sweep: dict[str, list[dict[str, Any]]] = {}
        for variant, overrides in variants.items():
            sweep[variant] = []
            for lr in lrs:
                runs = [
                    study.train(
                        variant,
                        f"lr{lr:g}-s{seed}",
                        [*overrides, f"optimizer.lr={lr}", f"seed={seed}"],
                        allow_diverged=True,
                    )
                    for seed in seeds_of(cfg)
                ]
                sweep[variant].append(self._point(lr, runs, cfg))
        return {"cases": self._claims(cfg, sweep), "sweep": sweep}

    @staticmethod
    def _point(lr: float, runs: list[dict[str, Any]], cfg: DictConfig) -> dict[str, Any]:
        nan = [bool(r.get("diverged", 0.0) > 0) for r in runs]
        # A diverged run is scored as what it is (its final, broken model), not dropped.
        accs = [r["test_acc"] if math.isfinite(r.get("test_acc", math.nan)) else 0.0 for r in runs]
        # Divergence in practice: the loss overflowed, or the weights blew up into a network stuck at chance.
        failed = [bad or acc <= float(cfg.failure_acc) for bad, acc in zip(nan, accs, strict=True)]
        return {
            "lr": lr,
            "runs": len(runs),
            "diverged": sum(failed),
            "nan": sum(nan),
            "test_accs": accs,
            "test_acc": mean_ci(accs, float(cfg.confidence), ACCURACY),
            "val_acc_best": mean_ci([r.get("val_acc_best", 0.0) for r in runs], float(cfg.confidence), ACCURACY),
            "run_ids": [r["run_id"] for r in runs],
        }

    def _claims(self, cfg: DictConfig, sweep: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        div = {v: sum(p["diverged"] for p in points) for v, points in sweep.items()}
        total = {v: sum(p["runs"] for p in points) for v, points in sweep.items()}
        table = [[div["no_clip"], total["no_clip"] - div["no_clip"]], [div["clip"], total["clip"] - div["clip"]]]
        p_value = float(stats.fisher_exact(table, alternative="greater").pvalue)  # H1: no_clip diverges more
        p_opposite = float(stats.fisher_exact(table, alternative="less").pvalue)  # H1: clip diverges more
        fewer = div["no_clip"] - div["clip"]
        stable = {v: max((p["lr"] for p in points if p["diverged"] == 0), default=0.0) for v, points in sweep.items()}
        stable_verdict, stable_reason = stable_range_verdict(stable, max(p["lr"] for p in sweep["no_clip"]))
        best = max(sweep["no_clip"], key=lambda p: p["val_acc_best"]["mean"])
        clipped = next(p for p in sweep["clip"] if p["lr"] == best["lr"])
        no_cost = DictConfig({"test": "equivalence", "margin": float(cfg.threshold)})
        judged = judge_claim(
            cfg, no_cost, clipped["test_accs"], best["test_accs"], lower_is_better=False, bounds=ACCURACY
        )
        gain = (
            math.log10(stable["clip"] / stable["no_clip"])
            if min(stable.values()) > 0
            else (math.inf if stable["clip"] > 0 else 0.0)
        )
        return [
            {
                "case": "fewer_divergences",
                "statement": "clipping lowers the divergence rate over the sweep",
                "value": float(fewer),
                "diverged": div,
                "runs": total,
                "test": "advantage",
                "method": "Fisher exact (divergence counts)",
                "p_value": p_value,
                "p_opposite": p_opposite,
                "power_note": f"{total['no_clip']} runs a side",
                "verdict": decide(p_value, p_opposite, 1 - float(cfg.confidence)),
                "reason": None,
            },
            {
                "case": "wider_stable_range",
                "statement": "clipping raises the largest learning rate that never diverges",
                "value": gain,
                "stable_lr": stable,
                "verdict": stable_verdict,
                "reason": stable_reason,
            },
            {
                "case": "no_cost_at_best_lr",
                "statement": f"at the best unclipped lr ({best['lr']:g}), clipping keeps the test accuracy",
                "lr": best["lr"],
                **judged,
            },
        ]

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        c = {case["case"]: case for case in verdict["cases"]}
        fewer, stable, cost = c["fewer_divergences"], c["wider_stable_range"], c["no_cost_at_best_lr"]
        lines = [
            f"Clipping: gradient norm {s['clip_norm']:g}. Seeds {s['seeds']} at every learning rate.",
            "",
            "| claim | numbers | verdict |",
            "|---|---|---|",
            f"| {fewer['statement']} | diverged {fewer['diverged']['no_clip']}/{fewer['runs']['no_clip']} without, "
            f"{fewer['diverged']['clip']}/{fewer['runs']['clip']} with clipping; Fisher p = {fewer['p_value']:.3g} | "
            f"**{fewer['verdict']}** |",
            f"| {stable['statement']} | largest stable lr {stable['stable_lr']['no_clip']:g} without, "
            f"{stable['stable_lr']['clip']:g} with clipping ({fmt(stable['value'], '.2f')} decades); "
            f"{stable['reason']} | **{stable['verdict']}** |",
            f"| {cost['statement']} | clip − no clip: {fmt_ci(cost['advantage'])} | **{cost['verdict']}** |",
            "",
            f"A run diverged if its loss became NaN or infinite (how many: in brackets) or it ended at test accuracy "
            f"<= {s['failure_acc']:g} (stuck at chance).",
            "",
            "| lr | diverged without (NaN) | diverged with (NaN) | test acc without | test acc with |",
            "|---|---|---|---|---|",
        ]
        for a, b in zip(verdict["sweep"]["no_clip"], verdict["sweep"]["clip"], strict=True):
            lines.append(
                f"| {a['lr']:g} | {a['diverged']}/{a['runs']} ({a['nan']}) | {b['diverged']}/{b['runs']} ({b['nan']}) | "
                f"{fmt_ci(a['test_acc'])} | {fmt_ci(b['test_acc'])} |"
            )
        return lines

    def plot(self, verdict: dict[str, Any], path) -> None:
        fig, (rate, acc) = subplots(1, 2, figsize=(11, 4.2))
        for variant, points in verdict["sweep"].items():
            lrs = [p["lr"] for p in points]
            rate.plot(lrs, [p["diverged"] / p["runs"] for p in points], marker="o", label=variant)
            means = np.array([p["test_acc"]["mean"] for p in points])
            lows = np.array([p["test_acc"]["low"] for p in points])
            acc.errorbar(lrs, means, yerr=np.nan_to_num(means - lows), marker="o", capsize=3, label=variant)
        rate.set(xscale="log", xlabel="learning rate", ylabel="fraction of seeds diverged", title="divergence")
        acc.set(xscale="log", xlabel="learning rate", ylabel="test accuracy (mean, interval)", title="accuracy")
        rate.legend()
        acc.legend()
        save_figure(fig, path)
