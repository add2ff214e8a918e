"""Exact studies: two runs the mathematics says are the same (or, for a control, are not), compared by the
relative distance of their final parameters in float64. The verdict is "equivalent" when the distance is
below the study's threshold; the predicted verdict (`expected`) is shown beside it, never used for it.

    loss_vs_lr_scale    lr·scale against loss·scale, per optimizer
    grad_accumulation   k accumulated micro-batches of B against one batch of k·B, without and with batch norm
    ddp_equivalence     one process with batch B against P DDP processes with B/P each, without and with batch norm
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from optbench.core.config import compose_config
from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.studies.config import selected_cases
from optbench.studies.measures import EQUIVALENT, NOT_EQUIVALENT, relative_distance, verdict_of
from optbench.studies.report import fmt
from optbench.studies.runner import Study


def _case(cfg: DictConfig, name: str, distance: float, runs: dict[str, dict], **extra: Any) -> dict[str, Any]:
    """One case of an exact study; the runs' final states are dropped (they stay in MLflow's metrics)."""
    case = cfg.cases[name]
    threshold = float(cfg.threshold)
    return {
        "case": name,
        "overrides": list(case.overrides),
        "value": distance,
        "distance": distance,
        "verdict": verdict_of(distance, threshold),
        "times_threshold": distance / threshold,
        "expected": case.get("expected"),
        "why": case.get("why"),
        **extra,
        "runs": {variant: {k: v for k, v in run.items() if k != "state"} for variant, run in runs.items()},
    }


def _whole_batches(cfg: DictConfig, overrides: list[str], batch: int) -> tuple[int, int]:
    """(whole batches of `batch` per epoch, training examples): both runs must see the same examples."""
    from optbench.training.data import load_dataset

    n_train = len(load_dataset(compose_config(*cfg.train, *overrides).data).train)
    if n_train // batch < 1:
        raise ConfigError(f"study {cfg.name}: a batch of {batch} exceeds the {n_train} training examples.")
    return n_train // batch, n_train


class DistanceKind:
    plot_name = "distance.png"
    correction_why = (
        "each claim is an exact equality judged on a deterministic float64 parameter distance against a "
        "threshold, not a statistical test"
    )

    def rule(self, cfg: DictConfig) -> str:
        return f"{EQUIVALENT} if the relative parameter distance < {cfg.threshold:g}, else {NOT_EQUIVALENT}"

    def plot(self, verdict: dict[str, Any], path) -> None:
        cases = verdict["cases"]
        floor = 1e-18  # an exact 0 cannot sit on a log axis
        values = [max(c["distance"], floor) for c in cases]
        colors = ["tab:green" if c["verdict"] == EQUIVALENT else "tab:red" for c in cases]
        fig, ax = subplots(figsize=(1.2 * len(cases) + 3, 4))
        ax.bar([c["case"] for c in cases], values, color=colors)
        ax.axhline(verdict["threshold"], color="black", linestyle="--", label=f"threshold {verdict['threshold']:g}")
        ax.set_yscale("log")
        ax.set_ylabel("relative parameter distance")
        ax.set_title(verdict["question"], fontsize=9)
        ax.legend()
        save_figure(fig, path)

    @staticmethod
    def pair_table(verdict: dict[str, Any], a: str, b: str, columns: dict[str, Any]) -> list[str]:
        """One row per case: distance, verdict, `columns` (header -> function of the case), test metrics."""
        head = [
            "case",
            "distance",
            "× threshold",
            "verdict",
            "expected",
            *columns,
            f"test acc {a} / {b}",
            f"test loss {a} / {b}",
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in verdict["cases"]:
            r = c["runs"]
            acc = " / ".join(fmt(r[v].get("test_acc"), ".4f") for v in (a, b))
            loss = " / ".join(fmt(r[v].get("test_loss"), ".4g") for v in (a, b))
            cells = [
                c["case"],
                fmt(c["distance"]),
                fmt(c["times_threshold"], ".2g"),
                f"**{c['verdict']}**",
                str(c["expected"]),
                *(str(f(c)) for f in columns.values()),
                acc,
                loss,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def whole_batch_report(self, verdict: dict[str, Any], intro: str, a: str, b: str) -> list[str]:
        """`intro`, the pair table with the examples each epoch used, and why each case is expected."""
        used = {"examples per epoch": lambda c: f"{c['examples_per_epoch']} of {c['train_examples']}"}
        why = [f"- **{c['case']}**: {c['why']}" for c in verdict["cases"] if c.get("why")]
        return [intro, "", *self.pair_table(verdict, a, b, used), "", *why]


class LossVsLrScale(DistanceKind):
    """Per optimizer: baseline, lr·scale (loss 1) and lr (loss·scale); distance between the last two."""

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        scale = float(cfg.scale)
        cases = []
        for name in selected_cases(cfg):
            overrides = list(cfg.cases[name].overrides)
            lr = float(compose_config(*cfg.train, *overrides).optimizer.lr)
            runs = {
                variant: study.train(name, variant, [*overrides, *extra], keep_params=True)
                for variant, extra in (
                    ("baseline", [f"optimizer.lr={lr!r}", "loss_scale=1.0"]),
                    ("lr_scaled", [f"optimizer.lr={lr * scale!r}", "loss_scale=1.0"]),
                    ("loss_scaled", [f"optimizer.lr={lr!r}", f"loss_scale={scale!r}"]),
                )
            }
            state = {variant: run["state"] for variant, run in runs.items()}
            cases.append(
                _case(
                    cfg,
                    name,
                    relative_distance(state["loss_scaled"], state["lr_scaled"]),
                    runs,
                    lr=lr,
                    distance_loss_scaled_to_baseline=relative_distance(state["loss_scaled"], state["baseline"]),
                    distance_lr_scaled_to_baseline=relative_distance(state["lr_scaled"], state["baseline"]),
                )
            )
        return {"cases": cases}

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]["scale"]
        lines = [
            f"| case | lr | distance lr·{s:g} vs loss·{s:g} | × threshold | verdict | expected | "
            f"loss·{s:g} vs baseline | lr·{s:g} vs baseline | test acc baseline / lr·{s:g} / loss·{s:g} | "
            f"test loss baseline / lr·{s:g} / loss·{s:g} |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in verdict["cases"]:
            r = c["runs"]
            acc = " / ".join(fmt(r[v].get("test_acc"), ".4f") for v in ("baseline", "lr_scaled", "loss_scaled"))
            loss = " / ".join(fmt(r[v].get("test_loss"), ".4g") for v in ("baseline", "lr_scaled", "loss_scaled"))
            lines.append(
                f"| {c['case']} | {c['lr']:g} | {fmt(c['distance'])} | {fmt(c['times_threshold'], '.2g')} | "
                f"**{c['verdict']}** | {c['expected']} | {fmt(c['distance_loss_scaled_to_baseline'])} | "
                f"{fmt(c['distance_lr_scaled_to_baseline'])} | {acc} | {loss} |"
            )
        lines += ["", "Why (the mathematics behind each expected verdict):", ""]
        lines += [f"- **{c['case']}**: {c['why']}" for c in verdict["cases"] if c.get("why")]
        return lines


class GradAccumulation(DistanceKind):
    """Per case: batch B accumulated k times against batch k·B; distance between the two."""

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        b, k = int(cfg.micro_batch), int(cfg.accumulate)
        if b < 1 or k < 2:
            raise ConfigError(f"study {cfg.name}: micro_batch must be >= 1 and accumulate >= 2, got {b} and {k}.")
        cases = []
        for name in selected_cases(cfg):
            overrides = list(cfg.cases[name].overrides)
            large_per_epoch, n_train = _whole_batches(cfg, overrides, k * b)  # the remainder is never used
            runs = {
                variant: study.train(name, variant, [*overrides, *extra], keep_params=True)
                for variant, extra in (
                    (
                        "accumulated",
                        [
                            f"batch_size={b}",
                            f"trainer.accumulate_grad_batches={k}",
                            f"trainer.limit_train_batches={large_per_epoch * k}",
                        ],
                    ),
                    (
                        "large_batch",
                        [
                            f"batch_size={k * b}",
                            "trainer.accumulate_grad_batches=1",
                            f"trainer.limit_train_batches={large_per_epoch}",
                        ],
                    ),
                )
            }
            distance = relative_distance(runs["accumulated"]["state"], runs["large_batch"]["state"])
            cases.append(
                _case(cfg, name, distance, runs, examples_per_epoch=large_per_epoch * k * b, train_examples=n_train)
            )
        return {"cases": cases}

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        b, k = s["micro_batch"], s["accumulate"]
        intro = f"B = {b}, k = {k}: {k} accumulated micro-batches of {b} against one batch of {k * b}."
        return self.whole_batch_report(verdict, intro, "accumulated", "large_batch")


class DdpEquivalence(DistanceKind):
    """Per case: one process with batch B against `processes` DDP processes (gloo on CPU) with B/P each."""

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        b, p = int(cfg.batch_size), int(cfg.processes)
        if p < 2 or b % p:
            raise ConfigError(f"study {cfg.name}: processes must be >= 2 and divide batch_size, got {p} and {b}.")
        cases = []
        for name in selected_cases(cfg):
            overrides = list(cfg.cases[name].overrides)
            # DDP shards every epoch's order by rank (IndexBatches), so at step t the P ranks together hold
            # exactly the single process's batch t; whole batches only, so no rank ever wraps around.
            per_epoch, n_train = _whole_batches(cfg, overrides, b)
            limit = f"trainer.limit_train_batches={per_epoch}"
            runs = {
                "single": study.train(
                    name, "single", [*overrides, f"batch_size={b}", "strategy=auto", limit], keep_params=True
                ),
                "ddp": study.train(
                    name,
                    "ddp",
                    [*overrides, f"batch_size={b // p}", "strategy=ddp_spawn", f"strategy.devices={p}", limit],
                    keep_params=True,
                ),
            }
            distance = relative_distance(runs["ddp"]["state"], runs["single"]["state"])
            cases.append(_case(cfg, name, distance, runs, examples_per_epoch=per_epoch * b, train_examples=n_train))
        return {"cases": cases}

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        b, p = s["batch_size"], s["processes"]
        intro = f"One process with batch {b} against {p} DDP processes (`strategy=ddp_spawn`, gloo) with {b // p} each."
        return self.whole_batch_report(verdict, intro, "single", "ddp")
