"""Targets of the least-squares workloads (data=regression, data=quadratic), set from their known optimum.

    python -m optbench.training.optimum_target quadratic --factor 2 --epochs 5 --batch-size 64 --note '...'

A classification workload's target comes from reference runs (optbench-target). A least-squares problem
needs none: the validation loss of its exact training-set solution is computed in closed form, and the
target is that loss times a stated factor (val/loss, minimized). The file has optbench-target's format
(conf/targets/<data>-linear.yaml: workload, metric, direction, target, reference, provenance), so the suite
reads both kinds alike; `reference` records the factor, the optimal losses and the data settings, so the
number can be recomputed (tests/test_workloads.py does).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from optbench.core.errors import OptbenchError

PROCEDURE = (
    "factor x the validation mean squared error of the exact least-squares solution on the training split "
    "(closed form, float64); first crossing of val/loss counts. No reference runs: the optimum is known."
)


def optimum_target(data_name: str, factor: float, *overrides: str) -> dict[str, Any]:
    """The target and what it rests on (the data settings, the optimal loss of each split, the fingerprint)."""
    from optbench.core.config import compose_config
    from optbench.training.data import load_dataset
    from optbench.training.synthetic import optimal_losses

    if not factor >= 1:
        raise OptbenchError(f"factor must be >= 1 (a target below the optimal loss is unreachable), got {factor}.")
    data_cfg = compose_config(f"data={data_name}", "model=linear", *overrides).data
    data = load_dataset(data_cfg)
    losses = optimal_losses(data)
    if not losses:
        raise OptbenchError(f"data={data_name} has no known optimum: set its target with optbench-target instead.")
    settings = {k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items() if k != "prepared"}
    return {
        "target": round(factor * losses["val"], 6),
        "factor": factor,
        "optimal_loss": {split: round(value, 6) for split, value in losses.items()},
        "data": settings,
        "fingerprint": data.fingerprint,
    }


def write_optimum_target(
    data_name: str,
    factor: float,
    epochs: int,
    batch_size: int,
    targets_dir: str | Path = "conf/targets",
    note: str = "",
) -> Path:
    """Write <targets_dir>/<data>-linear.yaml for the workload trained `epochs` epochs at `batch_size`; `note`
    says why the factor is what it is."""
    import optbench
    from optbench.tracking.runs import git_state

    found = optimum_target(data_name, factor)
    commit, dirty = git_state()
    content = {
        "workload": {"data": data_name, "model": "linear"},
        "metric": "val/loss",
        "direction": "minimize",
        "target": found["target"],
        "reference": {
            "procedure": PROCEDURE,
            "factor": factor,
            "factor_note": note,
            "optimal_loss": found["optimal_loss"],
            "data": found["data"],
            "epochs": epochs,
            "batch_size": batch_size,
            "seeds": [],
        },
        "provenance": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": commit,
            "git_dirty": dirty,
            "optbench_version": optbench.__version__,
            "data_fingerprint": found["fingerprint"],
            "command": (
                f"python -m optbench.training.optimum_target {data_name} --factor {factor:g} --epochs {epochs} "
                f"--batch-size {batch_size} --note '{note}'"
            ),
        },
    }
    header = (
        f"Target for data={data_name} model=linear, set a priori from the problem's known optimum.\n"
        f"Regenerate it with: {content['provenance']['command']}"
    )
    path = Path(targets_dir) / f"{data_name}-linear.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comments + yaml.safe_dump(content, sort_keys=False, default_flow_style=None, width=110))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m " + __spec__.name)
    parser.add_argument("data", help="a conf/data option with a known optimum: regression or quadratic")
    parser.add_argument("--factor", type=float, required=True, help="target = factor x optimal val/loss")
    parser.add_argument("--epochs", type=int, required=True, help="the workload's budget (recorded)")
    parser.add_argument("--batch-size", type=int, required=True, help="the workload's batch size (recorded)")
    parser.add_argument("--targets-dir", default="conf/targets", help="where targets files live")
    parser.add_argument("--note", default="", help="why the factor is what it is (recorded)")
    args = parser.parse_args(argv)
    try:
        path = write_optimum_target(args.data, args.factor, args.epochs, args.batch_size, args.targets_dir, args.note)
    except OptbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
