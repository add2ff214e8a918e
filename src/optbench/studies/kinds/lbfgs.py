"""L-BFGS on convex problems (lbfgs_convex): does it reach the optimum in fewer steps than first-order
methods, and what does a step cost?

Every problem of `problems` is a convex problem with a known optimum θ* (data=regression and data=quadratic:
least squares, the float64 minimizer of the training error; model=linear). Every optimizer runs full batch (the whole
training split every step, L-BFGS's setting), from the same initialization per seed, built by optbench's
build_model and build_optimizer and driven directly (no Lightning: its per-step overhead would swamp the
seconds of a 21-parameter model). After every step the relative distance ||θ − θ*|| / ||θ*|| is measured;
a run reaches the `tolerance` at the first step where it is at or below it, or never within `max_steps`
(censored). Per run:

    steps         optimizer steps (parameter updates) to the tolerance; for L-BFGS, quasi-Newton iterations
                  (each a direction from the curvature pairs, then a strong-Wolfe line search)
    evaluations   function evaluations (forward + backward over the training split, closure calls) to the
                  tolerance: one per first-order step; L-BFGS's line search makes one or more
    seconds       wall time of the steps to the tolerance (the distance checks not counted)

L-BFGS runs as it is meant to, all its iterations inside one step() call: stepping it one iteration per
call (max_iter=1) re-evaluates every point twice and, in torch 2.15, can stall for good after a line
search returns t = 0 (measured here: stuck at 1e-3 on regression_wide). Its iterate after k iterations is
that of a fresh, identically seeded run with max_iter=k and the evaluation budget of a max_steps run (the
loop is deterministic and identical up to its k-th iteration), so it is measured that way for k = 1, 2, ... until it is within tolerance or L-BFGS stops
by its own tests before k iterations (converged by them, or its line search failed).

The first-order methods' learning rates come from the fixed sweep `lrs` of each, run on `tune_seeds` (apart
from the evaluation seeds): the rate reaching the tolerance in the fewest steps, else the one ending
closest to θ*. L-BFGS keeps its configured lr (1, with a strong-Wolfe line search).

One claim per problem and first-order method: L-BFGS's steps to the tolerance are fewer, by more than the
`threshold` (in steps), than the method's, paired by seed (Wilcoxon signed-rank, a run that never reaches
it counted as +inf; optbench.stats.censored_claim_test), Holm-corrected over the study's claims.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch
from mlflow.entities import Metric
from omegaconf import DictConfig, OmegaConf
from torch import nn

from optbench.core.config import compose_config
from optbench.core.errors import ConfigError
from optbench.core.figures import save_figure, subplots
from optbench.studies.config import seeds_of
from optbench.studies.measures import cpu_threads, device_of
from optbench.studies.report import fmt
from optbench.studies.runner import Study
from optbench.studies.verdict import judge_censored_claim
from optbench.tracking import TAG_PREFIX, log_values, open_run, run_params

LBFGS = "lbfgs"


# --- measuring ----------------------------------------------------------------------------------------------


class FullBatchRun:
    """One model and optimizer on the whole training split, stepped until it is within tolerance of θ*."""

    def __init__(self, run_cfg: DictConfig, data, device: str = "cpu") -> None:
        from optbench.training.models import build_model  # Lightning is slow to import; `list` needs none
        from optbench.training.optim import build_optimizer

        if data.optimum is None:
            raise ConfigError(
                f"data={data.name} has no known optimum; lbfgs_convex needs a convex problem that states one "
                "(data=regression or data=quadratic, with model=linear)."
            )
        torch.manual_seed(run_cfg.seed)  # every optimizer of a seed starts from the same initialization
        self.model = build_model(run_cfg.model, data).to(device)
        self.optimizer = build_optimizer(run_cfg.optimizer, self.model)
        self.x, self.y = data.train.x.to(device), data.train.y.to(device)
        self.optimum = data.optimum.to(device)
        self.device = device
        self.criterion = nn.MSELoss()
        self.evaluations = 0

    def closure(self) -> torch.Tensor:
        """Loss and gradients over the whole training split: one function evaluation."""
        self.evaluations += 1
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.criterion(self.model(self.x), self.y)
        loss.backward()
        return loss

    def distance(self) -> float:
        from optbench.training.models import distance_to_optimum

        return float(distance_to_optimum(self.model, self.optimum) / torch.linalg.vector_norm(self.optimum))

    def run(self, tolerance: float, max_steps: int) -> dict[str, Any]:
        """Step until the relative distance is <= tolerance or max_steps; the curve of distances per step."""
        curve = [self.distance()]
        seconds = 0.0
        reached = None if curve[0] > tolerance else {"steps": 0, "evaluations": 0, "seconds": 0.0}
        for step in range(1, max_steps + 1):
            if reached is not None:
                break
            start = time.perf_counter()
            self.optimizer.step(self.closure)
            seconds += elapsed(start, self.device)
            curve.append(self.distance())
            if not math.isfinite(curve[-1]):
                break  # diverged: it never reaches the tolerance
            if curve[-1] <= tolerance:
                reached = {"steps": step, "evaluations": self.evaluations, "seconds": seconds}
        return run_record(reached, curve)


def elapsed(start: float, device: str) -> float:
    """Seconds since `start`, once the GPU's queue has drained (the work done, not just launched)."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def lbfgs_run(run_cfg: DictConfig, data, tolerance: float, max_steps: int, device: str = "cpu") -> dict[str, Any]:
    """L-BFGS's iterations, evaluations and seconds to the tolerance: for k = 1, 2, ..., a fresh run of one
    step() with max_iter=k (see the module's docstring), until one is within tolerance or stops early."""
    curve = [FullBatchRun(run_cfg, data, device).distance()]
    reached = None if curve[0] > tolerance else {"steps": 0, "evaluations": 0, "seconds": 0.0}
    for k in range(1, max_steps + 1):
        if reached is not None:
            break
        cfg_k = run_cfg.copy()
        OmegaConf.set_struct(cfg_k, False)
        # The run of max_steps iterations, stopped after k: torch's default evaluation budget of that run
        # (max_iter · 5/4), not of a k-iteration run, which would stop the line searches early.
        cfg_k.optimizer.max_iter = k
        cfg_k.optimizer.max_eval = cfg_k.optimizer.get("max_eval") or max_steps * 5 // 4
        run = FullBatchRun(cfg_k, data, device)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run.optimizer.step(run.closure)
        seconds = elapsed(start, device)
        curve.append(run.distance())
        if curve[-1] <= tolerance:
            reached = {"steps": k, "evaluations": run.evaluations, "seconds": seconds}
        iterations = run.optimizer.state[next(run.model.parameters())]["n_iter"]
        if not math.isfinite(curve[-1]) or iterations < k:
            break  # L-BFGS stopped by its own tests: more iterations allowed give the same point
    return run_record(reached, curve)


def run_record(reached: dict[str, Any] | None, curve: list[float]) -> dict[str, Any]:
    """One run's record: steps, evaluations and seconds to the tolerance (None: never reached) and its curve."""
    return {
        "steps": reached["steps"] if reached else None,
        "evaluations": reached["evaluations"] if reached else None,
        "seconds": reached["seconds"] if reached else None,
        "steps_run": len(curve) - 1,
        "final_distance": curve[-1],
        "curve": curve,
    }


def best_lr(sweep: list[dict[str, Any]]) -> float:
    """The swept learning rate that reaches the tolerance in the fewest steps (summed over the tuning
    seeds; a run that never does counts as never), else the one ending closest to the optimum."""

    def key(point: dict[str, Any]) -> tuple[float, float]:
        steps = [r["steps"] for r in point["runs"]]
        total = sum(steps) if all(s is not None for s in steps) else math.inf
        final = statistics.fmean(
            r["final_distance"] if math.isfinite(r["final_distance"]) else math.inf for r in point["runs"]
        )
        return total, final

    return min(sweep, key=key)["lr"]


def selected(cfg: DictConfig, key: str, run_key: str) -> list[str]:
    """The keys of `cfg[key]` listed in `cfg[run_key]` (all of them if that is null), unknown ones refused."""
    known = list(cfg[key] or {})
    names = list(cfg.get(run_key) or known)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(
            f"study {cfg.name}: {run_key} names {', '.join(unknown) or 'nothing'}; choose among {', '.join(known)}."
        )
    return names


def check_knobs(cfg: DictConfig) -> None:
    """Fail before running anything: counts positive, every method swept, the tuning seeds apart."""
    if not (isinstance(cfg.max_steps, int) and cfg.max_steps >= 1):
        raise ConfigError(f"study {cfg.name}: max_steps must be a positive integer, got {cfg.max_steps!r}.")
    if not (isinstance(cfg.tolerance, (int, float)) and cfg.tolerance > 0):
        raise ConfigError(f"study {cfg.name}: tolerance must be a positive number, got {cfg.tolerance!r}.")
    selected(cfg, "problems", "run_problems")
    for name in selected(cfg, "first_order", "run_first_order"):
        method = cfg.first_order[name]
        lrs = list(method.get("lrs") or [])
        if not lrs or not all(isinstance(lr, (int, float)) and lr > 0 for lr in lrs):
            raise ConfigError(f"study {cfg.name}: first_order.{name}.lrs must list positive learning rates, got {lrs}.")
    if set(cfg.tune_seeds) & set(seeds_of(cfg)):
        raise ConfigError(
            f"study {cfg.name}: tune_seeds {list(cfg.tune_seeds)} overlap the evaluation seeds {seeds_of(cfg)}; "
            "choosing the learning rate on an evaluation seed leaks into the measurement. Keep them apart."
        )


def method_runs(cfg: DictConfig, problem: str, overrides: list[str], seeds: list[int], data) -> list[dict[str, Any]]:
    """One full-batch run per seed of one optimizer (its overrides) on one problem."""
    runs, device = [], device_of(cfg)
    tolerance, max_steps = float(cfg.tolerance), int(cfg.max_steps)
    for seed in seeds:
        run_cfg = compose_config(*cfg.train, *cfg.problems[problem], *overrides, f"seed={seed}")
        if run_cfg.optimizer._target_ == "torch.optim.LBFGS":
            runs.append({"seed": seed, **lbfgs_run(run_cfg, data, tolerance, max_steps, device)})
        else:
            runs.append({"seed": seed, **FullBatchRun(run_cfg, data, device).run(tolerance, max_steps)})
    return runs


def log_method(study: Study, problem: str, method: str, overrides: list[str], result: dict[str, Any]) -> str:
    """One MLflow run per problem and method, nested under the verdict run: per seed (MLflow step = its
    index) steps, evaluations and seconds to the tolerance, and the first seed's distance curve."""
    cfg = study.cfg
    name = f"{problem}-{method}"
    tags = {"mlflow.parentRunId": study.parent_run_id, TAG_PREFIX + "study": cfg.name, TAG_PREFIX + "study_case": name}
    now = int(time.time() * 1000)
    with open_run(study.client, study.experiment, name, tags) as run_id:
        run_cfg = compose_config(*cfg.train, *cfg.problems[problem], *overrides)
        metrics = [
            Metric(f"lbfgs_convex/{key}", float(r[key]), now, index)
            for index, r in enumerate(result["runs"])
            for key in ("steps", "evaluations", "seconds")
            if r[key] is not None
        ]
        metrics += [
            Metric("lbfgs_convex/distance", d, now, step)
            for step, d in enumerate(result["runs"][0]["curve"])
            if math.isfinite(d)
        ]
        params = {**run_params(run_cfg), "tolerance": cfg.tolerance, "max_steps": cfg.max_steps}
        log_values(study.client, run_id, params=params, metrics=metrics)
    study.n_runs += 1
    return run_id


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the seeds that reached the tolerance, and how many did."""

    def median(key: str) -> float:
        values = [r[key] for r in runs if r[key] is not None]
        return float(statistics.median(values)) if values else math.nan

    return {
        "reached": sum(r["steps"] is not None for r in runs),
        "steps": median("steps"),
        "evaluations": median("evaluations"),
        "seconds": median("seconds"),
    }


# --- the study ----------------------------------------------------------------------------------------------


class LbfgsConvex:
    plot_name = "convergence.png"

    def rule(self, cfg: DictConfig) -> str:
        return (
            f"per problem and first-order method, L-BFGS needs fewer full-batch steps than the method (at its best "
            f"swept lr) to reach a relative distance to the optimum <= {cfg.tolerance:g}, by more than "
            f"{cfg.threshold:g} steps: Wilcoxon signed-rank on the per-seed differences (a run not there within "
            f"{cfg.max_steps} steps counts as never), Holm-corrected over the study's claims; supported if the "
            f"adjusted p < {1 - cfg.confidence:g}, refuted if that of the opposite test is, else inconclusive. "
            "Function evaluations and seconds are reported beside it, not judged"
        )

    def measure(self, study: Study) -> dict[str, Any]:
        from optbench.training.data import load_dataset

        cfg = study.cfg
        check_knobs(cfg)
        seeds, tune_seeds = seeds_of(cfg), list(cfg.tune_seeds)
        problems, cases = {}, []
        with cpu_threads(cfg.threads, device_of(cfg)):
            for problem in selected(cfg, "problems", "run_problems"):
                data = load_dataset(compose_config(*cfg.train, *cfg.problems[problem]).data)
                methods: dict[str, dict[str, Any]] = {}
                lbfgs = list(cfg.lbfgs)
                methods[LBFGS] = {"overrides": lbfgs, "lr": None, "sweep": []}
                methods[LBFGS]["runs"] = method_runs(cfg, problem, lbfgs, seeds, data)
                for method in selected(cfg, "first_order", "run_first_order"):
                    spec = cfg.first_order[method]
                    sweep = [
                        {
                            "lr": float(lr),
                            "runs": method_runs(
                                cfg, problem, [*spec.overrides, f"optimizer.lr={lr}"], tune_seeds, data
                            ),
                        }
                        for lr in spec.lrs
                    ]
                    lr = best_lr(sweep)
                    chosen = [*spec.overrides, f"optimizer.lr={lr}"]
                    methods[method] = {
                        "overrides": chosen,
                        "lr": lr,
                        "sweep": [{"lr": p["lr"], **summary(p["runs"])} for p in sweep],
                        "runs": method_runs(cfg, problem, chosen, seeds, data),
                    }
                for method, result in methods.items():
                    result["run_id"] = log_method(study, problem, method, result["overrides"], result)
                    result.update(summary(result["runs"]))
                problems[problem] = methods
                cases += [self._claim(cfg, problem, method, methods) for method in methods if method != LBFGS]
        for methods in problems.values():  # the curves stay in MLflow; verdict.json keeps the first seed's
            for result in methods.values():
                result["curve"] = [r.pop("curve") for r in result["runs"]][0]
        return {"cases": cases, "problems": problems, "device": device_of(cfg)}

    @staticmethod
    def _claim(cfg: DictConfig, problem: str, method: str, methods: dict[str, Any]) -> dict[str, Any]:
        a, b = methods[LBFGS]["runs"], methods[method]["runs"]
        horizon = [float(cfg.max_steps)] * len(a)
        judged = judge_censored_claim(
            cfg, DictConfig({}), [r["steps"] for r in a], [r["steps"] for r in b], horizon, horizon
        )
        ratio = {
            key: methods[LBFGS][key] / methods[method][key] if methods[method][key] else math.nan
            for key in ("steps", "evaluations", "seconds")
        }
        return {
            "case": f"{problem}:lbfgs_vs_{method}",
            "statement": f"on {problem}, L-BFGS reaches the tolerance in fewer steps than {method}",
            "problem": problem,
            "method": judged.pop("method"),
            "than": method,
            "lbfgs_over_method": ratio,
            **judged,
        }

    def report(self, verdict: dict[str, Any]) -> list[str]:
        s = verdict["settings"]
        lines = [
            f"Full batch, tolerance: relative distance to the optimum <= {s['tolerance']:g}, at most "
            f"{s['max_steps']} steps; seeds {s['seeds']} (learning rates chosen on tuning seeds {s['tune_seeds']}). "
            "Medians over the seeds that reached the tolerance.",
            "",
            "| problem | optimizer | lr | reached | steps | evaluations | seconds | L-BFGS ÷ it: steps / evaluations / "
            "seconds | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        claims = {c["case"]: c for c in verdict["cases"]}
        n = len(s["seeds"])
        for problem, methods in verdict["problems"].items():
            for method, r in methods.items():
                claim = claims.get(f"{problem}:lbfgs_vs_{method}")
                ratios = (
                    " / ".join(fmt(claim["lbfgs_over_method"][k], ".2g") for k in ("steps", "evaluations", "seconds"))
                    if claim
                    else ""
                )
                lr = "line search" if method == LBFGS else f"{r['lr']:g}"
                lines.append(
                    f"| {problem} | {method} | {lr} | {r['reached']}/{n} | {fmt(r['steps'], '.4g')} | "
                    f"{fmt(r['evaluations'], '.4g')} | {_ms(r['seconds'])} | "
                    f"{ratios} | {'**' + claim['verdict'] + '**' if claim else ''} |"
                )
        lines += [
            "",
            "Learning-rate sweeps (median steps to the tolerance on the tuning seeds; n/a: never reached):",
            "",
        ]
        for problem, methods in verdict["problems"].items():
            for method, r in methods.items():
                if r["sweep"]:
                    cells = ", ".join(f"{p['lr']:g}: {fmt(p['steps'], '.4g')}" for p in r["sweep"])
                    lrs = [p["lr"] for p in r["sweep"]]
                    edge = ", at the sweep's edge" if r["lr"] in (min(lrs), max(lrs)) else ""
                    lines.append(f"- {problem}, {method}: {cells} (chosen {r['lr']:g}{edge})")
        return lines

    def plot(self, verdict: dict[str, Any], path) -> None:
        problems = verdict["problems"]
        fig, axes = subplots(1, len(problems), figsize=(5.5 * len(problems), 4.2), squeeze=False)
        tolerance = verdict["settings"]["tolerance"]
        for ax, (problem, methods) in zip(axes[0], problems.items(), strict=True):
            for method, r in methods.items():
                curve = [max(d, 1e-12) for d in r["curve"] if math.isfinite(d)]
                label = method if method == LBFGS else f"{method} (lr {r['lr']:g})"
                ax.plot(range(len(curve)), curve, label=label, linewidth=2 if method == LBFGS else 1.2)
            ax.axhline(tolerance, color="black", linestyle=":", label=f"tolerance {tolerance:g}")
            ax.set(
                yscale="log",
                xlabel="full-batch step",
                ylabel="||θ − θ*|| / ||θ*||",
                title=f"{problem} (seed {verdict['settings']['seeds'][0]})",
            )
            ax.legend(fontsize=8)
        save_figure(fig, path)


def _ms(seconds: float) -> str:
    return "n/a" if not math.isfinite(seconds) else f"{seconds * 1e3:.3g} ms"
