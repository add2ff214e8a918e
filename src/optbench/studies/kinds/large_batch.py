"""large_batch: do layer-wise trust ratios (LAMB, LARS) keep accuracy at large batches where plain optimizers lose it?

Every optimizer of `run_optimizers` (default: all of `optimizers`, name -> optbench-train overrides) runs at every batch size of `batch_sizes`
for the same number of epochs (the same examples: a larger batch takes fewer steps). Each (optimizer,
batch) pair is tuned on its own with the same Optuna budget (`tune`, seeded from `tune_seed`), so no
learning-rate scaling rule is assumed, then trained once per evaluation seed (`seeds`, apart from the
tuning seed). Per optimizer and seed the study measures

    drop = test accuracy at the smallest batch - test accuracy at the largest batch

and judges three kinds of claims (`claims`), each on the per-seed values, paired by seed:

    keeps: {optimizer}       its drop is below `drop_margin` (H0: drop >= drop_margin)
    loses: {optimizer}       its drop is above `drop_margin` (H0: drop <= drop_margin)
    better, than             the first optimizer's drop is smaller than the second's by more than the
                             claim's margin (default `threshold`)

by optbench.stats's paired t-test and interval (studies.verdict.judge_claim), Holm-corrected together.
A claim naming an optimizer that is not run is left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig

from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.stats import mean_ci
from optbench.studies.config import seeds_of
from optbench.studies.report import fmt, fmt_ci
from optbench.studies.runner import Study
from optbench.studies.verdict import judge_claim

ACCURACY = (0.0, 1.0)
DROP = (-1.0, 1.0)
KINDS = ("keeps", "loses", "better")


def batches_of(cfg: DictConfig) -> list[int]:
    sizes = list(cfg.batch_sizes)
    if len(sizes) < 2 or not all(isinstance(b, int) and b >= 1 for b in sizes) or sizes != sorted(set(sizes)):
        raise ConfigError(
            f"study {cfg.name}: batch_sizes must be at least two increasing positive integers, got {sizes}."
        )
    return sizes


def chosen_optimizers(cfg: DictConfig) -> list[str]:
    """The optimizers to run: `run_optimizers` if given, else every key of `optimizers`."""
    chosen = list(cfg.get("run_optimizers") or cfg.optimizers)
    unknown = [n for n in chosen if n not in cfg.optimizers]
    if unknown:
        raise ConfigError(
            f"study {cfg.name}: run_optimizers names {', '.join(unknown)}; optimizers: {', '.join(cfg.optimizers)}."
        )
    return chosen


def claims_run(cfg: DictConfig) -> dict[str, DictConfig]:
    """The claims whose optimizers all run."""
    chosen = chosen_optimizers(cfg)
    return {
        name: claim
        for name, claim in cfg.claims.items()
        if all(claim[k] in chosen for k in ("keeps", "loses", "better", "than") if k in claim)
    }


def claim_kind(cfg: DictConfig, name: str, claim: DictConfig) -> str:
    """keeps, loses or better, from the claim's keys; an optimizer the study does not run is refused."""
    kinds = [k for k in ("keeps", "loses") if k in claim] + (["better"] if "better" in claim else [])
    if len(kinds) != 1:
        raise ConfigError(
            f"study {cfg.name}: claim {name} must name one of keeps: OPTIMIZER, loses: OPTIMIZER, or "
            "better: OPTIMIZER with than: OPTIMIZER."
        )
    named = [claim[k] for k in ("keeps", "loses", "better", "than") if k in claim]
    unknown = [n for n in named if n not in cfg.optimizers]
    if unknown or (kinds[0] == "better" and "than" not in claim):
        raise ConfigError(
            f"study {cfg.name}: claim {name} names {', '.join(unknown) or 'no than'}; it compares optimizers of "
            f"`optimizers` ({', '.join(cfg.optimizers)})."
        )
    return kinds[0]


def check_config(cfg: DictConfig) -> None:
    """Every check that can run before the first training run."""
    batches_of(cfg)
    if len(seeds_of(cfg)) < 2:
        raise ConfigError(f"study {cfg.name}: the claims need a t-interval over seeds; give at least two seeds.")
    if not (isinstance(cfg.drop_margin, (int, float)) and 0 <= cfg.drop_margin < 1):
        raise ConfigError(
            f"study {cfg.name}: drop_margin must be an accuracy difference in [0, 1), got {cfg.drop_margin!r}."
        )
    for name, claim in cfg.claims.items():
        claim_kind(cfg, name, claim)
    if not claims_run(cfg):
        raise ConfigError(
            f"study {cfg.name}: no claim compares the optimizers run ({', '.join(chosen_optimizers(cfg))})."
        )


def drops(results: dict[str, Any], optimizer: str, batches: list[int]) -> list[float]:
    """Per seed (in the order of `seeds`): test accuracy at the smallest batch minus at the largest."""
    small, large = (results[optimizer][str(b)]["test_accs"] for b in (batches[0], batches[-1]))
    return [a - b for a, b in zip(small, large, strict=True)]


def judge(cfg: DictConfig, name: str, claim: DictConfig, results: dict[str, Any]) -> dict[str, Any]:
    """One claim's verdict from the per-seed drops (or accuracies) of the optimizers it names."""
    batches = batches_of(cfg)
    kind = claim_kind(cfg, name, claim)
    margin = float(cfg.drop_margin)
    if kind == "better":
        a, b = drops(results, claim.better, batches), drops(results, claim.than, batches)
        judged = judge_claim(cfg, claim, a, b, lower_is_better=True, bounds=DROP)
        sides = {"better": claim.better, "than": claim.than}
    else:
        optimizer = claim[kind]
        small, large = (results[optimizer][str(b)]["test_accs"] for b in (batches[0], batches[-1]))
        # keeps: the large batch's accuracy is above the small one's minus the margin (drop < margin);
        # loses: the small batch's accuracy is above the large one's plus the margin (drop > margin).
        a, b, signed = (large, small, -margin) if kind == "keeps" else (small, large, margin)
        judged = judge_claim(cfg, DictConfig({"margin": signed}), a, b, lower_is_better=False, bounds=ACCURACY)
        judged["value"] = float(np.mean(drops(results, optimizer, batches)))  # the drop itself, not its negative
        sides = {"optimizer": optimizer}
    return {"case": name, "statement": claim.statement, "kind": kind, **sides, **judged}


class LargeBatch:
    plot_name = "large_batch.png"

    def rule(self, cfg: DictConfig) -> str:
        batches = batches_of(cfg)
        return (
            f"drop = test accuracy at batch {batches[0]} minus at batch {batches[-1]} (each tuned with the same "
            f"budget, the same epochs), per seed over seeds {list(seeds_of(cfg))}; keeps: the paired t-test of "
            f"drop < {cfg.drop_margin:g}; loses: of drop > {cfg.drop_margin:g}; better: of the first optimizer's "
            f"drop being smaller than the second's by more than the claim's margin (default {cfg.threshold:g}); "
            f"shown with {cfg.confidence:.0%} intervals; one-sided p-values Holm-corrected over the study's claims: "
            f"supported if the adjusted p < {1 - cfg.confidence:g}, refuted if that of the opposite test is, else "
            "inconclusive"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        check_config(cfg)
        results = {
            optimizer: {str(b): self._point(study, optimizer, b) for b in batches_of(cfg)}
            for optimizer in chosen_optimizers(cfg)
        }
        batches = batches_of(cfg)
        summary = {
            optimizer: mean_ci(drops(results, optimizer, batches), float(cfg.confidence), DROP) for optimizer in results
        }
        cases = [judge(cfg, name, claim, results) for name, claim in claims_run(cfg).items()]
        return {"cases": cases, "results": results, "drops": summary}

    @staticmethod
    def _point(study: Study, optimizer: str, batch: int) -> dict[str, Any]:
        """One optimizer at one batch: tuned with the study's budget, then trained on every evaluation seed."""
        cfg = study.cfg
        case = f"{optimizer}_b{batch}"
        overrides = [*cfg.optimizers[optimizer], f"batch_size={batch}"]
        tuned = study.tune(case, overrides)
        if not tuned["overrides"]:
            raise ConfigError(f"study {cfg.name}: no tuning trial of {case} completed; widen its search range.")
        runs = [
            study.train(case, f"seed{seed}", [*overrides, *tuned["overrides"], f"seed={seed}"], allow_diverged=True)
            for seed in seeds_of(cfg)
        ]
        # a diverged run is scored as what it is (its broken model), not dropped
        accs = [r["test_acc"] if np.isfinite(r.get("test_acc", np.nan)) else 0.0 for r in runs]
        return {
            "batch_size": batch,
            "tuned": {k: tuned.get(k) for k in ("best_params", "best_value", "n_trials", "budget")},
            "trials": tuned["trials"],
            "test_accs": accs,
            "test_acc": mean_ci(accs, float(cfg.confidence), ACCURACY),
            "steps": runs[0].get("steps"),
            "diverged": sum(r.get("diverged", 0.0) > 0 for r in runs),
            "run_ids": [r["run_id"] for r in runs],
        }

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        batches = s["batch_sizes"]
        lines = [
            f"Every optimizer at every batch was tuned with the same budget (`{' '.join(s['tune'])}`, tuning seed "
            f"{s['tune_seed']}), then trained for the same epochs on seeds {s['seeds']}. Mean [{s['confidence']:.0%} "
            "t-interval] over seeds; a claim's numbers are paired by seed.",
            "",
            "| claim | measured [interval] | margin | verdict |",
            "|---|---|---|---|",
        ]
        for c in verdict["cases"]:
            if c["kind"] == "better":
                what = f"{c['than']}'s drop − {c['better']}'s: {fmt_ci(c['advantage'], '.4f')}"
            else:
                drop = verdict["drops"][c["optimizer"]]
                what = f"{c['optimizer']}'s drop: {fmt_ci(drop, '.4f')}"
            margin = {"keeps": "drop < ", "loses": "drop > "}.get(c["kind"], "difference > ")
            margin += f"{abs(c['margin']):g}"
            lines.append(f"| {c['statement']} | {what} | {margin} | **{c['verdict']}** |")
        lines += [
            "",
            "| optimizer | " + " | ".join(f"batch {b}: tuned lr, test acc (steps)" for b in batches) + " | drop |",
            "|---|" + "---|" * (len(batches) + 1),
        ]
        for optimizer, points in verdict["results"].items():
            cells = [
                f"{fmt(p['tuned']['best_params'].get('optimizer.lr'), '.3g')}, {fmt_ci(p['test_acc'])} "
                f"({fmt(p['steps'], '.0f')})" + (f", {p['diverged']} diverged" if p["diverged"] else "")
                for p in points.values()
            ]
            lines.append(f"| {optimizer} | " + " | ".join(cells) + f" | {fmt_ci(verdict['drops'][optimizer])} |")
        return lines

    def plot(self, verdict: dict[str, Any], path) -> None:
        fig, (acc, lrs) = subplots(1, 2, figsize=(11, 4.2))
        for i, (optimizer, points) in enumerate(verdict["results"].items()):
            sizes = np.array([p["batch_size"] for p in points.values()], dtype=float)
            means = np.array([p["test_acc"]["mean"] for p in points.values()])
            low = np.array([p["test_acc"]["low"] for p in points.values()])
            high = np.array([p["test_acc"]["high"] for p in points.values()])
            low, high = np.where(np.isnan(low), means, low), np.where(np.isnan(high), means, high)
            shifted = sizes * (1 + 0.03 * (i - 1.5))  # side by side, so the intervals do not hide each other
            acc.errorbar(shifted, means, yerr=[means - low, high - means], marker="o", capsize=3, label=optimizer)
            tuned = [p["tuned"]["best_params"].get("optimizer.lr", np.nan) for p in points.values()]
            lrs.plot(sizes, tuned, marker="o", label=optimizer)
        acc.set(xscale="log", xlabel="batch size (same epochs)", ylabel="test accuracy (mean, t-interval)")
        acc.set_title("accuracy as the batch grows, each point tuned")
        lrs.set(xscale="log", yscale="log", xlabel="batch size", ylabel="tuned learning rate")
        lrs.set_title("the learning rate each batch was tuned to")
        acc.legend(fontsize=8)
        save_figure(fig, path)
