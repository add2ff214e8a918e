"""Where a `dvc repro` of the main pipeline spends its wall time: process start-up, training and tuning
computation, MLflow I/O, reporting, and the rest, as shares.

    .venv/bin/python benchmarks/pipeline.py                 # the small preset: about 3-4 minutes on 2 cores
    .venv/bin/python benchmarks/pipeline.py --preset default --json benchmarks/results/pipeline_default.json

It copies the pipeline (dvc.yaml, params.yaml, conf/, the source folders the stages depend on) into a fresh
git + DVC repository in a temporary folder, sets the preset's params, and runs `dvc repro` there with
OPTBENCH_TIMINGS set: every optbench command then appends its own phase times when it exits
(optbench.core.timings). The remainder of the wall time, outside every optbench process, is DVC's own
work between commands (hashing, locking, starting the next stage).

Presets: `small` (sgd and adam, seeds 0 and 1, 2 epochs, 1 study x 2 trials each) and `default` (params.yaml as
committed). It is a benchmark, not a test: it reports and exits 0 whenever the pipeline ran.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PRESETS = {
    "small": {
        "optimizers": ["sgd", "adam"],
        "seeds": [0, 1],
        "epochs": 2,
        "tune": {"n_studies": 1, "n_trials": 2},
    },
    "default": {},
}
# Phases as optbench.core.timings names them, in the order of the report, with what each holds.
PHASES = {
    "startup": "process start-up: interpreter, imports, config composition",
    "compute": "training and tuning computation (Lightning's fit and test loops)",
    "tracking": "MLflow I/O: runs, params, metrics, artifacts",
    "reporting": "the comparison report (optbench-compare)",
    "data": "preparing the split (optbench-prepare)",
    "other": "inside the commands, the rest: data loading, building the trainer, Optuna, files, exit",
}
console = Console(highlight=False)


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def make_workspace(folder: Path, preset: str) -> None:
    """A git + DVC repository holding the pipeline and what its stages depend on."""
    for name in ("dvc.yaml", "conf", "src"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, folder / name)
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), PRESETS[preset])
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    quiet = {"cwd": folder, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q"], **quiet)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], **quiet)


def run_pipeline(folder: Path, timings: Path) -> float:
    env = {
        **os.environ,
        "OPTBENCH_TIMINGS": str(timings),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    if folder != ROOT:
        env.pop("MLFLOW_TRACKING_URI", None)  # the workspace's own SQLite store
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "dvc"), "repro"], cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        console.print(done.stdout[-3000:], done.stderr[-3000:], markup=False)
        sys.exit(f"dvc repro failed (exit {done.returncode})")
    return seconds


def summarize(records: list[dict], wall: float) -> dict:
    phases: collections.Counter[str] = collections.Counter()
    commands: dict[str, dict[str, float]] = {}
    for record in records:
        phases.update(record["phases"])
        entry = commands.setdefault(record["command"], {"processes": 0, "wall": 0.0, "startup": 0.0})
        entry["processes"] += 1
        entry["wall"] += record["wall"]
        entry["startup"] += record["phases"].get("startup", 0.0)
    inside = sum(record["wall"] for record in records)
    seconds = {name: phases.get(name, 0.0) for name in PHASES}
    seconds["outside"] = max(0.0, wall - inside)  # DVC between the commands
    return {
        "wall": wall,
        "processes": len(records),
        "seconds": seconds,
        "shares": {name: value / wall for name, value in seconds.items()},
        "non_computation_share": 1 - seconds["compute"] / wall,
        "commands": commands,
    }


def report(summary: dict, preset: str) -> None:
    table = Table(title=f"dvc repro, preset {preset}: {summary['wall']:.0f} s, {summary['processes']} processes")
    for column in ("where", "seconds", "share", "what"):
        table.add_column(column, justify="right" if column in ("seconds", "share") else "left")
    descriptions = {**PHASES, "outside": "outside the commands: DVC itself"}
    for name, seconds in summary["seconds"].items():
        table.add_row(name, f"{seconds:.1f}", f"{summary['shares'][name]:.1%}", descriptions[name])
    console.print(table)
    per_command = Table(title="per command")
    for column in ("command", "processes", "mean wall s", "mean start-up s"):
        per_command.add_column(column, justify="left" if column == "command" else "right")
    for command, entry in sorted(summary["commands"].items()):
        n = entry["processes"]
        per_command.add_row(command, str(n), f"{entry['wall'] / n:.1f}", f"{entry['startup'] / n:.1f}")
    console.print(per_command)
    console.print(
        f"not training or tuning computation: {summary['non_computation_share']:.1%} of the wall time (goal <= 20%)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--json", type=Path, help="also write the summary to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace (its path is printed)")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="run `dvc repro` in this checkout instead (what `make repro` does: only stale stages run, and the "
        "results are this checkout's); the preset is then params.yaml as it is",
    )
    args = parser.parse_args(argv)
    if args.in_place:
        args.preset = "in place"
        with tempfile.TemporaryDirectory(prefix="optbench-pipeline-") as tmp:
            timings = Path(tmp) / "timings.jsonl"
            console.print(f"running dvc repro in {ROOT} ...")
            wall = run_pipeline(ROOT, timings)
            records = [json.loads(line) for line in timings.read_text().splitlines() if line.strip()]
    else:
        folder = Path(tempfile.mkdtemp(prefix="optbench-pipeline-"))
        try:
            make_workspace(folder, args.preset)
            timings = folder / "timings.jsonl"
            console.print(f"running dvc repro (preset {args.preset}) in {folder} ...")
            wall = run_pipeline(folder, timings)
            records = [json.loads(line) for line in timings.read_text().splitlines() if line.strip()]
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    summary = summarize(records, wall)
    report(summary, args.preset)
    if args.json:
        result = {"benchmark": "pipeline", "date": time.strftime("%Y-%m-%d"), "preset": args.preset} | summary
        result["machine"] = {"cpus": os.cpu_count()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
