"""Adagrad against RMSprop (adaptive_lr_decay): does Adagrad's effective step size decay with its accumulated
squared gradients while RMSprop's does not, and what does that do late in training?

Each optimizer of `optimizers` (Adagrad and RMSprop, the real torch.optim classes built by optbench) trains
the same network on every seed, at its learning rate from the fixed sweep `lrs` (the same number of rates,
spread alike around each one's default, run on `tune_seeds`, apart from the evaluation seeds): the rate
with the lowest final training loss. A Lightning callback reads, after every `probe_every`-th optimizer step,
the optimizer's own state: the effective step of every parameter entry,

    Adagrad   clr / (sqrt(state['sum']) + eps),         clr = lr / (1 + (step − 1) · lr_decay)
    RMSprop   lr / (sqrt(state['square_avg']) + eps)     (minus grad_avg² first when centered)

the factor the gradient is multiplied by in torch's update, and keeps its median over the entries (entries
whose gradient is always zero, such as constant pixels, sit at lr / eps and would swamp a mean). The training
loss of every step is kept too. Per run, with the windows given as fractions of the run's steps:

    step_ratio        mean effective step over `late_window` / over `early_window` (after RMSprop's average
                      has warmed up from zero)
    late_improvement  ln(mean loss over `before_late_window`) − ln(mean loss over `late_window`): how much
                      the training loss still falls late in training

Claims, each judged over the seeds (paired t on the per-seed values, optbench.stats's policy), Holm-corrected:
Adagrad's step ratio is below `threshold` (its step shrinks), RMSprop's is above it (it does not), and
RMSprop's late improvement exceeds Adagrad's by more than `late_margin`.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import torch
from mlflow.entities import Metric
from omegaconf import DictConfig

from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.stats import mean_ci
from optbench.studies.config import seeds_of
from optbench.studies.report import fmt, fmt_ci
from optbench.studies.runner import Study
from optbench.studies.verdict import judge_claim

ADAGRAD, RMSPROP = "adagrad", "rmsprop"
ACCURACY = (0.0, 1.0)


# --- measuring ----------------------------------------------------------------------------------------------


def effective_step(optimizer: torch.optim.Optimizer) -> float:
    """The median over every parameter entry of the factor torch's Adagrad or RMSprop multiplies the gradient
    by (see the module's docstring); NaN while the optimizer holds no state (RMSprop before its first step)."""
    factors = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param)
            if not state:
                continue
            if "sum" in state:  # Adagrad
                step = float(state["step"])
                lr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
                second = state["sum"]
            elif "square_avg" in state:  # RMSprop
                lr, second = group["lr"], state["square_avg"]
                if group.get("centered"):
                    second = second - state["grad_avg"] ** 2
            else:
                raise ConfigError(
                    f"adaptive_lr_decay reads Adagrad's state['sum'] or RMSprop's state['square_avg']; "
                    f"{type(optimizer).__name__} keeps {', '.join(state)}. Use optimizer=adagrad or rmsprop."
                )
            factors.append((lr / (second.detach().float().sqrt() + group["eps"])).flatten())
    return float(torch.cat(factors).median()) if factors else math.nan


def step_probe(every: int):
    """A Lightning callback keeping the training loss of every step and the effective step every `every` steps."""
    from lightning.pytorch.callbacks import Callback  # slow to import; `optbench-study list` does not need it

    class StepProbe(Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.steps: list[tuple[int, float]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss) / pl_module.loss_scale if loss is not None else math.nan)
            if trainer.global_step % every == 0:  # global_step: optimizer steps taken, this one included
                self.steps.append((trainer.global_step, effective_step(trainer.optimizers[0])))

    return StepProbe()


def window_mean(values: list[float], window: list[float]) -> float:
    """Mean of the finite values whose position, as a fraction of the run, lies in [window[0], window[1]]."""
    n = len(values)
    lo, hi = math.floor(window[0] * n), max(math.ceil(window[1] * n), math.floor(window[0] * n) + 1)
    chosen = [v for v in values[lo:hi] if math.isfinite(v)]
    return statistics.fmean(chosen) if chosen else math.nan


def run_measures(cfg: DictConfig, losses: list[float], steps: list[tuple[int, float]]) -> dict[str, float]:
    """step_ratio and late_improvement of one run (see the module's docstring)."""
    factors = [v for _, v in steps]
    early, late = window_mean(factors, list(cfg.early_window)), window_mean(factors, list(cfg.late_window))
    before, end = window_mean(losses, list(cfg.before_late_window)), window_mean(losses, list(cfg.late_window))
    ok = all(math.isfinite(v) and v > 0 for v in (before, end))
    return {
        "early_step": early,
        "late_step": late,
        "step_ratio": late / early if early > 0 else math.nan,
        "loss_before_late": before,
        "final_loss": end,
        "late_improvement": math.log(before) - math.log(end) if ok else math.nan,
    }


def check_knobs(cfg: DictConfig) -> None:
    """Fail before training: the two optimizers, ordered windows within the run, tuning seeds apart."""
    if set(cfg.optimizers) != {ADAGRAD, RMSPROP}:
        raise ConfigError(f"study {cfg.name}: optimizers must be adagrad and rmsprop, got {list(cfg.optimizers)}.")
    for key in ("early_window", "before_late_window", "late_window"):
        lo, hi = (float(v) for v in cfg[key])
        if not 0 <= lo < hi <= 1:
            raise ConfigError(
                f"study {cfg.name}: {key} must be [from, to] with 0 <= from < to <= 1, got {list(cfg[key])}."
            )
    if not cfg.early_window[1] <= cfg.late_window[0] or not cfg.before_late_window[1] <= cfg.late_window[0]:
        raise ConfigError(f"study {cfg.name}: early_window and before_late_window must end before late_window starts.")
    for name in cfg.optimizers:
        if not list(cfg.lrs.get(name) or []):
            raise ConfigError(f"study {cfg.name}: lrs.{name} must list the learning rates swept for {name}.")
    if set(cfg.tune_seeds) & set(seeds_of(cfg)):
        raise ConfigError(
            f"study {cfg.name}: tune_seeds {list(cfg.tune_seeds)} overlap the evaluation seeds {seeds_of(cfg)}; "
            "choosing the learning rate on an evaluation seed leaks into the measurement. Keep them apart."
        )


def train_probed(study: Study, name: str, variant: str, overrides: list[str], allow_diverged: bool) -> dict[str, Any]:
    """One training run with the probe; its per-run measures; the effective-step curve logged to its MLflow
    run as study/effective_step (MLflow step = optimizer step)."""
    probe = step_probe(int(study.cfg.probe_every))
    run = study.train(
        name, variant, [f"optimizer={name}", *overrides], callbacks=[probe], allow_diverged=allow_diverged
    )
    measures = run_measures(study.cfg, probe.losses, probe.steps)
    metrics = [Metric("study/effective_step", v, 0, s) for s, v in probe.steps if math.isfinite(v)]
    if run.get("run_id") and metrics:
        study.client.log_batch(run["run_id"], metrics=metrics)
    return {**run, **measures, "curve": probe.steps, "losses": probe.losses}


# --- the study ----------------------------------------------------------------------------------------------


class AdaptiveLrDecay:
    plot_name = "effective_step.png"

    def rule(self, cfg: DictConfig) -> str:
        return (
            f"per seed, the effective step's ratio late / early (mean over the windows {list(cfg.late_window)} and "
            f"{list(cfg.early_window)} of the run): Adagrad's below {cfg.threshold:g} and RMSprop's above it, each "
            f"a one-sample t-test of the log ratios against ln {cfg.threshold:g}; late training: RMSprop's "
            f"ln-loss drop from {list(cfg.before_late_window)} to {list(cfg.late_window)} larger than Adagrad's by "
            f"more than {cfg.late_margin:g}, paired by seed. Holm-corrected over the three; supported if the adjusted "
            f"p < {1 - cfg.confidence:g}, refuted if that of the opposite test is, else inconclusive"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        check_knobs(cfg)
        results: dict[str, dict[str, Any]] = {}
        for name in cfg.optimizers:
            sweep = []
            for lr in cfg.lrs[name]:
                runs = [
                    train_probed(study, name, f"tune-lr{lr:g}-s{seed}", [f"optimizer.lr={lr}", f"seed={seed}"], True)
                    for seed in cfg.tune_seeds
                ]
                losses = [r["final_loss"] for r in runs]
                final = statistics.fmean(losses) if all(math.isfinite(v) for v in losses) else math.inf
                sweep.append({"lr": float(lr), "final_loss": final})
            lr = min(sweep, key=lambda p: p["final_loss"])["lr"]
            runs = [
                train_probed(study, name, f"lr{lr:g}-s{seed}", [f"optimizer.lr={lr}", f"seed={seed}"], False)
                for seed in seeds_of(cfg)
            ]
            results[name] = {"lr": lr, "sweep": sweep, **self._summary(cfg, runs)}
        return {"cases": self._claims(cfg, results), "results": results}

    @staticmethod
    def _summary(cfg: DictConfig, runs: list[dict[str, Any]]) -> dict[str, Any]:
        """Per-seed measures, their intervals, and the curves kept for the plot (loss curves stay in memory)."""
        confidence = float(cfg.confidence)
        per_seed = {
            key: [r[key] for r in runs]
            for key in ("step_ratio", "late_improvement", "early_step", "late_step", "final_loss", "test_acc")
        }
        return {
            "per_seed": per_seed,
            "step_ratio": mean_ci(per_seed["step_ratio"], confidence, (0.0, math.inf)),
            "late_improvement": mean_ci(per_seed["late_improvement"], confidence),
            "test_acc": mean_ci(per_seed["test_acc"], confidence, ACCURACY),
            "curves": [r["curve"] for r in runs],
            "loss_curves": [_thinned(r["losses"], 200) for r in runs],
            "run_ids": [r["run_id"] for r in runs],
        }

    @staticmethod
    def _claims(cfg: DictConfig, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        margin = float(cfg.threshold)
        log_ratio = {name: [math.log(v) for v in r["per_seed"]["step_ratio"]] for name, r in results.items()}
        floor = [math.log(margin)] * len(seeds_of(cfg))
        at_margin = DictConfig({"margin": 0.0})
        cases = [
            {
                "case": "adagrad_step_decays",
                "statement": f"Adagrad's effective step ends below {margin:g}× its early value",
                **judge_claim(cfg, at_margin, log_ratio[ADAGRAD], floor, lower_is_better=True, bounds=None),
            },
            {
                "case": "rmsprop_step_does_not_decay",
                "statement": f"RMSprop's effective step ends above {margin:g}× its early value",
                **judge_claim(cfg, at_margin, log_ratio[RMSPROP], floor, lower_is_better=False, bounds=None),
            },
            {
                "case": "rmsprop_improves_more_late",
                "statement": "late in training RMSprop still lowers the training loss more than Adagrad (ln-loss drop)",
                **judge_claim(
                    cfg,
                    DictConfig({"margin": float(cfg.late_margin)}),
                    results[RMSPROP]["per_seed"]["late_improvement"],
                    results[ADAGRAD]["per_seed"]["late_improvement"],
                    lower_is_better=False,
                    bounds=None,
                ),
            },
        ]
        for case in cases[:2]:  # the judged numbers are log ratios against ln(margin); report them as ratios
            case["in_units"] = "ln(step ratio) − ln(threshold)"
        return cases

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s, r = verdict["settings"], verdict["results"]
        lines = [
            f"Effective step: the median over parameter entries of lr / (sqrt(v) + eps), read from the optimizer's "
            f"state every {s['probe_every']} steps. Seeds {s['seeds']}; learning rates chosen on tuning seeds "
            f"{s['tune_seeds']} by the lowest final training loss.",
            "",
            "| claim | statement | number | verdict |",
            "|---|---|---|---|",
        ]
        for c in verdict["cases"]:
            number = fmt_ci(c["advantage"], ".3f") + (f" ({c['in_units']})" if c.get("in_units") else "")
            lines.append(f"| {c['case']} | {c['statement']} | {number} | **{c['verdict']}** |")
        lines += [
            "",
            "| optimizer | lr | sweep (final training loss) | effective step early → late | ratio late / early | "
            "ln-loss drop late | final training loss | test accuracy |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, res in r.items():
            sweep = ", ".join(f"{p['lr']:g}: {fmt(p['final_loss'], '.3g')}" for p in res["sweep"])
            early = statistics.fmean(res["per_seed"]["early_step"])
            late = statistics.fmean(res["per_seed"]["late_step"])
            lines.append(
                f"| {name} | {res['lr']:g} | {sweep} | {fmt(early, '.3g')} → {fmt(late, '.3g')} | "
                f"{fmt_ci(res['step_ratio'], '.3f')} | {fmt_ci(res['late_improvement'], '.3f')} | "
                f"{fmt(statistics.fmean(res['per_seed']['final_loss']), '.3g')} | {fmt_ci(res['test_acc'])} |"
            )
        return lines

    def plot(self, verdict: dict[str, Any], path) -> None:
        fig, (steps, losses) = subplots(1, 2, figsize=(12, 4.4))
        s = verdict["settings"]
        for color, (name, res) in zip(("tab:blue", "tab:orange"), verdict["results"].items(), strict=False):
            for i, curve in enumerate(res["curves"]):
                x = [step for step, _ in curve]
                steps.plot(
                    x,
                    [v for _, v in curve],
                    color=color,
                    alpha=0.7,
                    label=f"{name} (lr {res['lr']:g})" if i == 0 else None,
                )
            for i, curve in enumerate(res["loss_curves"]):
                losses.plot(
                    [p for p, _ in curve], [v for _, v in curve], color=color, alpha=0.7, label=name if i == 0 else None
                )
        total = max(step for res in verdict["results"].values() for curve in res["curves"] for step, _ in curve)
        for ax in (steps, losses):
            for key, shade in (("early_window", "0.92"), ("late_window", "0.85")):
                ax.axvspan(s[key][0] * total, s[key][1] * total, color=shade, zorder=0)
            ax.legend(fontsize=8)
        steps.set(
            yscale="log",
            xlabel="optimizer step",
            ylabel="median lr / (sqrt(v) + eps)",
            title="effective step (shaded: windows)",
        )
        losses.set(yscale="log", xlabel="optimizer step", ylabel="training loss (batch)", title="training loss")
        save_figure(fig, path)


def _thinned(values: list[float], points: int) -> list[tuple[int, float]]:
    """(step, mean loss) over `points` equal chunks of the run: a readable curve from a noisy per-batch one."""
    chunks = np.array_split(np.asarray(values, dtype=float), min(points, max(len(values), 1)))
    out, start = [], 0
    for chunk in chunks:
        start += len(chunk)
        if len(chunk) and np.isfinite(chunk).any():
            out.append((start, float(np.nanmean(chunk))))
    return out
