"""Optimizer memory and step cost (optimizer_memory): how much state does each optimizer keep, and what does
one step cost?

Every case is an optimizer of conf/optimizer (with optional overrides). Its model is built from `train` with
optbench.training.models.build_model and its optimizer with optbench.training.optim.build_optimizer, the code path of every
optbench run, and both are driven directly (no Lightning, no MLflow inside the timed loop), cycling through
the same `batches` training batches, a new one each iteration so that L-BFGS does not converge on one.
A case's `precision` override is applied by the precision plugin Lightning's Trainer builds for it (optbench's
build_trainer): bf16-true converts the model to bfloat16, bf16-mixed and 16-mixed keep the float32 weights
and run the forward pass under autocast (16-mixed with its GradScaler), as in every optbench run:

    warm-up      `warmup_steps` iterations, so lazily created state exists (and L-BFGS's history fills)
    state ratio  optim.state_bytes (every tensor of the optimizer state, L-BFGS's lists and the 0-dim step
                 counters included) divided by the bytes of the parameters
    step         optimizer.step() alone, on the same gradients each time
    iteration    zero_grad + forward + backward + step, as optimizer.step(closure)

Times are multiples of the reference optimizer's (`reference`, SGD): a copy of the reference, on its own
model, is timed alternately with the case, call for call, and the ratio is the median of the `repeats`
per-pair ratios; a busy machine slows both members of a pair alike. On the CPU the timing uses `threads`
threads (on a shared machine, several threads mostly wait on each other). L-BFGS cannot step without its
closure: step() evaluates the model up to max_iter times plus its line search, so its step is its
iteration, and the evaluations per step are reported.

The claim per case is the textbook state size in units of parameter memory: `expected_ratio`, plus
`expected_per_pair` times the curvature pairs held (L-BFGS), and, where a case states it,
`expected_state_dtype`, the dtype of its state buffers (0-dim counters aside). The verdict is "as claimed"
if |measured − expected| <= the case's `tolerance` (default `threshold`) and the dtype is the stated one,
else "not as claimed". The ratio's unit is the case's own parameter bytes; `state_ratio_fp32` puts it in
float32 parameter bytes, the unit in which mixed precision is usually priced.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from mlflow.entities import Metric
from omegaconf import DictConfig
from torch import nn

from optbench.core.config import compose_config
from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.studies.config import selected_cases
from optbench.studies.measures import cpu_threads, device_of
from optbench.studies.report import fmt
from optbench.studies.runner import Study
from optbench.tracking import TAG_PREFIX, log_values, open_run, run_params

AS_CLAIMED, NOT_AS_CLAIMED = "as claimed", "not as claimed"


# --- measuring ----------------------------------------------------------------------------------------------


def verdict_of(
    measured: float, expected: float, tolerance: float, dtype: str | None = None, expected_dtype: str | None = None
) -> str:
    """As claimed when the ratio is within the tolerance and, if a dtype is claimed, the state has it."""
    close = math.isfinite(measured) and abs(measured - expected) <= tolerance
    return AS_CLAIMED if close and (expected_dtype is None or dtype == expected_dtype) else NOT_AS_CLAIMED


def state_dtype(optimizer: torch.optim.Optimizer) -> str:
    """The dtype(s) of the optimizer's state buffers, '+'-joined; 0-dim counters and norms left out (torch
    keeps Adam's step in float32 whatever the parameters); 'none' for a stateless optimizer."""
    dtypes = set()
    for state in optimizer.state.values():
        for value in state.values():
            tensors = value if isinstance(value, list) else [value]
            dtypes |= {str(t.dtype).removeprefix("torch.") for t in tensors if torch.is_tensor(t) and t.dim() > 0}
    return "+".join(sorted(dtypes)) or "none"


def precision_plugin(run_cfg: DictConfig):
    """The precision plugin Lightning's Trainer holds for this config, built by optbench's build_trainer (the
    one place that maps a `precision` option to Lightning's plugins); the Trainer's global switch for
    deterministic algorithms is put back."""
    from optbench.training.train import build_trainer

    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return build_trainer(run_cfg, None).precision_plugin
    finally:
        torch.use_deterministic_algorithms(deterministic)


def history_pairs(optimizer: torch.optim.Optimizer) -> int:
    """Curvature pairs (s, y) an L-BFGS optimizer holds; 0 for every other optimizer."""
    return sum(len(state.get("old_dirs") or ()) for state in optimizer.state.values())


class Stepper:
    """One model and its optimizer, built the way optbench builds them, stepped through shared batches."""

    def __init__(self, run_cfg: DictConfig, data, batches: list, device: str) -> None:
        from optbench.training.models import (
            build_model,  # Lightning is slow to import; `optbench-study list` needs none
        )
        from optbench.training.optim import build_optimizer

        torch.manual_seed(run_cfg.seed)  # every optimizer starts from the same initialization
        self.precision = precision_plugin(run_cfg)
        self.scaler = getattr(self.precision, "scaler", None)  # 16-mixed's GradScaler
        self.model = self.precision.convert_module(build_model(run_cfg.model, data)).to(device)
        self.optimizer = build_optimizer(run_cfg.optimizer, self.model)
        self.criterion = nn.MSELoss() if data.is_regression else nn.CrossEntropyLoss()
        self.batches, self.iterations, self.evaluations = batches, 0, 0

    def closure(self) -> torch.Tensor:
        self.evaluations += 1
        self.optimizer.zero_grad(set_to_none=True)
        x, y = self.precision.convert_input(self.batches[self.iterations % len(self.batches)])
        with self.precision.forward_context():
            loss = self.criterion(self.model(x), y)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        return loss

    def iterate(self) -> None:
        """One training iteration on the next batch (with a GradScaler: unscale, step, update, as Lightning)."""
        self.iterations += 1
        if self.scaler is None:
            self.optimizer.step(self.closure)
            return
        self.closure()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def step(self) -> None:
        """optimizer.step() on the gradients already there; L-BFGS's step needs its closure."""
        if isinstance(self.optimizer, torch.optim.LBFGS):
            self.iterate()
        else:
            self.optimizer.step()

    @property
    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


def paired_seconds(case: Callable[[], Any], reference: Callable[[], Any], repeats: int, device: str) -> dict:
    """Median seconds of `case` and of `reference`, called alternately, and the median per-pair ratio."""

    def seconds(action: Callable[[], Any]) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        action()
        if device == "cuda":
            torch.cuda.synchronize()  # the GPU's queue drained: the work is done, not just launched
        return time.perf_counter() - start

    pairs = [(seconds(case), seconds(reference)) for _ in range(repeats)]
    return {
        "seconds": statistics.median(c for c, _ in pairs),
        "reference_seconds": statistics.median(r for _, r in pairs),
        "ratio": statistics.median(c / r for c, r in pairs),
    }


def measure_case(case: Stepper, reference: Stepper, warmup: int, repeats: int, device: str) -> dict[str, Any]:
    """The case's state after `warmup` iterations, then its step and iteration times against the reference."""
    from optbench.training.optim import state_bytes

    for _ in range(warmup):
        case.iterate()
        reference.iterate()
    held = state_bytes(case.optimizer)
    parameters = sum(p.numel() for p in case.model.parameters())
    case.evaluations = 0
    iteration = paired_seconds(case.iterate, reference.iterate, repeats, device)
    evaluations_per_step = case.evaluations / repeats
    case.closure(), reference.closure()  # fresh gradients; the timed steps reuse them
    step = paired_seconds(case.step, reference.step, repeats, device)
    return {
        "parameters": parameters,
        "param_bytes": case.param_bytes,
        "param_dtype": str(next(case.model.parameters()).dtype).removeprefix("torch."),
        "state_bytes": held,
        "state_dtype": state_dtype(case.optimizer),
        "state_ratio": held / case.param_bytes,
        "state_ratio_fp32": held / (4 * parameters),
        "history_pairs": history_pairs(case.optimizer),
        "step_s": step["seconds"],
        "step_ratio": step["ratio"],
        "reference_step_s": step["reference_seconds"],
        "iteration_s": iteration["seconds"],
        "iteration_ratio": iteration["ratio"],
        "reference_iteration_s": iteration["reference_seconds"],
        "evaluations_per_step": evaluations_per_step,
    }


def training_batches(run_cfg: DictConfig, count: int, device: str):
    """(data, batches): the dataset and the first `count` full training batches of a seeded epoch, on `device`."""
    from optbench.training.data import TensorDataModule, load_dataset

    data = load_dataset(run_cfg.data)
    batches = []
    for x, y in TensorDataModule(data, run_cfg.batch_size, seed=run_cfg.seed).train_dataloader():
        if len(y) < run_cfg.batch_size or len(batches) == count:  # equal sizes: equal work per iteration
            break
        batches.append((x.to(device), y.to(device)))
    if not batches:
        raise ConfigError(f"batch_size={run_cfg.batch_size} exceeds the {len(data.train)} training examples.")
    return data, batches


def case_config(cfg: DictConfig, name: str) -> DictConfig:
    """The composed optbench config of one case: the study's `train`, then the case's overrides."""
    return compose_config(*cfg.train, f"seed={cfg.seed}", f"batch_size={cfg.batch_size}", *cfg.cases[name].overrides)


def expected_ratio(cfg: DictConfig, name: str, pairs: int) -> float:
    """The textbook state of a case in parameter memories: fixed buffers plus any per curvature pair."""
    case = cfg.cases[name]
    return float(case.expected_ratio) + float(case.get("expected_per_pair", 0)) * pairs


def check_knobs(cfg: DictConfig, names: list[str]) -> None:
    """Fail before measuring anything: every case states its claim, every count is positive."""
    for name in names:
        claim = (cfg.cases[name].get("expected_ratio"), cfg.cases[name].get("expected_per_pair", 0))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in claim):
            raise ConfigError(
                f"study {cfg.name}: case {name} needs a number expected_ratio (its state bytes / parameter bytes, "
                "the claim) and, optionally, a number expected_per_pair (per L-BFGS curvature pair)."
            )
        dtype = cfg.cases[name].get("expected_state_dtype")
        if dtype is not None and not (isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype)):
            raise ConfigError(
                f"study {cfg.name}: case {name} has expected_state_dtype {dtype!r}; name a torch dtype such as "
                "float32 or bfloat16, or leave it out."
            )
    if cfg.reference not in cfg.cases:
        raise ConfigError(f"study {cfg.name}: reference {cfg.reference} is not a case. Cases: {', '.join(cfg.cases)}.")
    for key in ("warmup_steps", "repeats", "batches"):
        if not (isinstance(cfg[key], int) and cfg[key] >= 1):
            raise ConfigError(f"study {cfg.name}: {key} must be a positive integer, got {cfg[key]!r}.")
    if cfg.threads is not None and not (isinstance(cfg.threads, int) and cfg.threads >= 1):
        raise ConfigError(f"study {cfg.name}: threads must be a positive integer or null, got {cfg.threads!r}.")


def run_case(study: Study, name: str, data, batches: list, device: str) -> dict[str, Any]:
    """One case measured inside its own MLflow run, nested under the verdict run and always ended."""
    cfg, client = study.cfg, study.client
    run_cfg = case_config(cfg, name)
    tags = {"mlflow.parentRunId": study.parent_run_id, TAG_PREFIX + "study": cfg.name, TAG_PREFIX + "study_case": name}
    with open_run(client, study.experiment, name, tags) as run_id:
        case = Stepper(run_cfg, data, batches, device)
        reference = Stepper(case_config(cfg, cfg.reference), data, batches, device)
        result = measure_case(case, reference, int(cfg.warmup_steps), int(cfg.repeats), device)
        result["expected_ratio"] = expected_ratio(cfg, name, result["history_pairs"])
        params = {
            **run_params(run_cfg),
            **{key: cfg[key] for key in ("warmup_steps", "repeats", "batches", "threads", "reference")},
        }
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"memory/{key}", float(value), now, 0)
            for key, value in result.items()
            if isinstance(value, (int, float)) and math.isfinite(value)
        ]
        log_values(client, run_id, params=params, metrics=metrics)
    study.n_runs += 1
    tolerance = float(cfg.cases[name].get("tolerance", cfg.threshold))
    expected_dtype = cfg.cases[name].get("expected_state_dtype")
    return {
        "case": name,
        "overrides": list(cfg.cases[name].overrides),
        "value": result["state_ratio"],
        "tolerance": tolerance,
        "expected_state_dtype": expected_dtype,
        "verdict": verdict_of(
            result["state_ratio"], result["expected_ratio"], tolerance, result["state_dtype"], expected_dtype
        ),
        "why": cfg.cases[name].get("why"),
        "run_id": run_id,
        **result,
    }


def skipped(device: str) -> list[dict[str, str]]:
    """What this hardware cannot measure."""
    if device == "cuda":
        return []
    return [
        {
            "what": "GPU step times",
            "why": "measured on the CPU: the state sizes are the same on a GPU, but there the step-time ratios depend "
            "on fused and foreach kernels and on launch overhead, not on arithmetic alone. The `gpu` preset "
            "measures a ResNet-18 on CUDA.",
        }
    ]


# --- the study ----------------------------------------------------------------------------------------------


class OptimizerMemory:
    plot_name = "memory.png"
    correction_why = (
        "each claim compares a deterministic state size (bytes) with its textbook value within a tolerance, "
        "not a statistical test; the step times are descriptive and judge nothing"
    )

    def rule(self, cfg: DictConfig) -> str:
        return (
            f"{AS_CLAIMED} if |measured − expected| <= the case's tolerance (default {cfg.threshold:g}), in units "
            f"of parameter memory, else {NOT_AS_CLAIMED}"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        cfg = study.cfg
        names = selected_cases(cfg)
        check_knobs(cfg, names)
        device = device_of(cfg)
        data, batches = training_batches(case_config(cfg, cfg.reference), int(cfg.batches), device)
        with cpu_threads(cfg.threads, device):
            cases = [run_case(study, name, data, batches, device) for name in names]
        return {"cases": cases, "device": device, "skipped": skipped(device)}

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        first, ref = verdict["cases"][0], s["reference"]
        threads = f", {s['threads']} thread(s)" if verdict["device"] == "cpu" and s["threads"] else ""
        lines = [
            f"The model has {first['parameters']:,} parameters ({first['param_bytes'] / 2**20:.1f} MiB), on "
            f"{verdict['device']}{threads}; {s['batches']} batches of "
            f"{s['batch_size']} in turn. State measured after {s['warmup_steps']} iterations. Times: the median of "
            f"{s['repeats']} per-pair ratios to {ref}, timed alternately with each case ({ref}'s median step "
            f"{first['reference_step_s'] * 1e3:.3g} ms, iteration {first['reference_iteration_s'] * 1e3:.3g} ms, "
            "while paired with the first case).",
            "",
            f"| optimizer | state / params | expected | tolerance | verdict | params / state dtype | "
            f"state / fp32 params | step × {ref} | iteration × {ref} | evaluations per step | why |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in verdict["cases"]:
            pairs = f" ({c['history_pairs']} pairs)" if c["history_pairs"] else ""
            dtype = f" ({c['expected_state_dtype']})" if c.get("expected_state_dtype") else ""
            lines.append(
                f"| {c['case']} | {c['state_ratio']:.4f} | {c['expected_ratio']:g}{pairs}{dtype} | ±{c['tolerance']:g} "
                f"| **{c['verdict']}** | {c.get('param_dtype', 'n/a')} / {c.get('state_dtype', 'n/a')} | "
                f"{fmt(c.get('state_ratio_fp32'), '.4f')} | {fmt(c['step_ratio'], '.2f')} | "
                f"{fmt(c['iteration_ratio'], '.2f')} | {fmt(c['evaluations_per_step'], '.3g')} | {c.get('why') or ''} |"
            )
        return lines

    def plot(self, verdict: dict[str, Any], path) -> None:
        cases = verdict["cases"]
        names = [c["case"] for c in cases]
        positions = list(range(len(cases)))
        reference = verdict["settings"]["reference"]
        fig, (memory, cost) = subplots(1, 2, figsize=(13, 0.35 * len(cases) + 2.5))
        colors = ["tab:green" if c["verdict"] == AS_CLAIMED else "tab:red" for c in cases]
        memory.barh(positions, [c["state_ratio"] for c in cases], color=colors, label="measured")
        memory.scatter(
            [c["expected_ratio"] for c in cases],
            positions,
            color="black",
            marker="|",
            s=200,
            zorder=3,
            label="expected",
        )
        memory.set_xscale("symlog", linthresh=0.01)  # linear near 0: SGD's 0 and Adafactor's sliver show
        memory.set(
            yticks=positions,
            yticklabels=names,
            xlabel="optimizer state / parameter memory (symlog)",
            title="state size (green: as claimed)",
        )
        height = 0.4
        cost.barh([p - height / 2 for p in positions], [c["step_ratio"] for c in cases], height, label="step")
        cost.barh(
            [p + height / 2 for p in positions],
            [c["iteration_ratio"] for c in cases],
            height,
            label="forward + backward + step",
        )
        cost.axvline(1.0, color="black", linestyle=":")
        cost.set(
            yticks=positions,
            yticklabels=names,
            xscale="log",
            xlabel=f"time / {reference}'s (median ratio)",
            title=f"cost relative to {reference}",
        )
        for ax in (memory, cost):
            ax.invert_yaxis()
            ax.legend(fontsize=8)
        save_figure(fig, path)
