"""The measured numbers of benchmarks/README.md, generated from the result files in benchmarks/results/.

    .venv/bin/python benchmarks/report.py            # rewrite the generated sections of benchmarks/README.md
    .venv/bin/python benchmarks/report.py --check    # exit 1 if the README disagrees with the result files

Each generated section sits between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->`. A result
file is what a benchmark wrote with --json (overhead.py, startup.py, pipeline.py, syncs.py); measure again,
write the file, run this script, and the README follows. tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def verdict(value: float, goal: float, higher_is_better: bool) -> str:
    met = value >= goal if higher_is_better else value <= goal
    return "met" if met else "not met"


def overhead_row(name: str, label: str, goal: float) -> list[str] | None:
    r = load(name)
    if r is None:
        return None
    ratio = r["ratio"]["optbench"]
    return [
        label,
        f"**{ratio:.2f}** (per repeat {spread(r['paired_train_s_ratios'])}); Lightning's floor {r['ratio']['lightning']:.2f}",
        f">= {goal}",
        verdict(ratio, goal, True),
        f"`{name}.json`, {r['date']}",
    ]


def summary() -> str:
    rows = [
        overhead_row("overhead_cnn_mnist5k", "throughput vs a plain loop, CNN on MNIST-5k", 0.97),
        overhead_row("overhead_mlp_digits", "throughput vs a plain loop, MLP on digits, 1 thread", 0.85),
    ]
    startup = load("startup")
    if startup:
        s, ratio = startup["seconds"], startup["ratio"]
        rows.append(
            [
                "1-step `optbench-train ... logger=none` process ÷ `import torch`",
                f"**{ratio['one step']:.2f}x** ({statistics_line(s['one step'])} vs {statistics_line(s['import torch'])}); "
                f"`import lightning.pytorch` alone {ratio['import lightning']:.2f}x",
                "<= 2.0x",
                verdict(ratio["one step"], 2.0, False),
                f"`startup.json`, {startup['date']}",
            ]
        )
        rows.append(
            [
                "`optbench-train --help`",
                f"**{startup['median']['help']:.2f} s** ({statistics_line(s['help'])})",
                "< 1.5 s",
                verdict(startup["median"]["help"], 1.5, False),
                f"`startup.json`, {startup['date']}",
            ]
        )
    for name in PIPELINES:
        pipeline = load(name)
        if not pipeline:
            continue
        share = pipeline["non_computation_share"]
        rows.append(
            [
                f"`dvc repro` ({PIPELINES[name]}): share of wall time not training or tuning computation",
                f"**{share:.0%}** of {pipeline['wall']:.0f} s ({pipeline['shares']['startup']:.0%} process start-up)",
                "<= 20%",
                verdict(share, 0.20, False),
                f"`{name}.json`, {pipeline['date']}",
            ]
        )
    rows.append(overhead_row("overhead_resnet18_gpu", "throughput vs a plain loop on a GPU, CIFAR-10/ResNet-18", 0.95))
    return table(["measurement", "now (median, spread)", "goal", "met?", "from"], [r for r in rows if r])


def statistics_line(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s, {min(values):.2f}-{max(values):.2f}, n={len(values)}"


def overhead_detail() -> str:
    rows = []
    for path in sorted(RESULTS.glob("overhead_*.json")):
        r = json.loads(path.read_text())
        c, ms = r["config"], r["ms_per_step"]
        setting = f"{c['model']} / {c['data']}, {c['optimizer']}, batch {c['batch_size']}, {c['accelerator']}"
        extras = [flag for flag in ("compile", "channels_last") if c.get(flag)]
        if extras:
            setting += ", " + ", ".join(extras)
        if r.get("note"):
            setting += f" ({r['note']})"
        rows.append(
            [
                f"`{path.name}`",
                setting,
                f"{r['machine']['threads']} threads, {r['machine']['device']}",
                f"{c['repeats']} x {r['steps_per_run']} steps ({r['headline']})",
                f"{ms['plain']:.2f}",
                f"{ms['lightning'] - ms['plain']:+.2f}",
                f"{ms['optbench'] - ms['lightning']:+.2f}",
                f"**{r['ratio']['optbench']:.2f}**",
                f"{r['ratio']['lightning']:.2f}",
                spread(r["paired_train_s_ratios"]),
            ]
        )
    header = [
        "file",
        "workload",
        "machine",
        "runs",
        "plain ms/step",
        "Lightning's loop ms",
        "optbench's own ms",
        "ratio",
        "Lightning floor",
        "per-repeat spread",
    ]
    return table(header, rows)


def startup_detail() -> str:
    r = load("startup")
    if r is None:
        return "(no startup.json yet)"
    rows = [
        [f"`{name}`" if " " not in name else name, statistics_line(seconds), f"{r['ratio'][name]:.2f}"]
        for name, seconds in r["seconds"].items()
    ]
    return table(["command", "wall time", "ratio to import torch"], rows) + f"\n\n{r['rounds']} rounds, {r['date']}."


PIPELINES = {
    "pipeline_small": "the small preset: 2 optimizers x 2 seeds, 2 epochs, 1 study of 2 trials",
    "pipeline_default": "the default pipeline, params.yaml as committed",
}


def pipeline_detail() -> str:
    parts = []
    for file, label in PIPELINES.items():
        r = load(file)
        if r is None:
            continue
        rows = [[name, f"{seconds:.1f}", f"{r['shares'][name]:.1%}"] for name, seconds in r["seconds"].items()]
        commands = [
            [f"`{n}`", str(c["processes"]), f"{c['wall'] / c['processes']:.1f}", f"{c['startup'] / c['processes']:.1f}"]
            for n, c in sorted(r["commands"].items())
        ]
        parts.append(
            f"`{file}.json`: {label}; {r['processes']} processes, {r['wall']:.0f} s wall, "
            f"{r['machine']['cpus']} cores, {r['date']}.\n\n"
            + table(["where", "seconds", "share"], rows)
            + "\n\n"
            + table(["command", "processes", "mean wall s", "mean start-up s"], commands)
        )
    return "\n\n".join(parts) or "(no pipeline result yet)"


def syncs_detail() -> str:
    rows = []
    for path in sorted(RESULTS.glob("syncs*.json")):
        r = json.loads(path.read_text())
        sites = ", ".join(f"{site} ({n})" for site, n in r["top_sites"][:4]) or "none"
        rows.append(
            [
                f"`{path.name}`",
                (" ".join(o for o in r["overrides"] if not o.startswith("data.prepared=")) or "digits / mlp")
                + (f" ({r['note']})" if r.get("note") else ""),
                str(r["steps"]),
                str(r["syncs"]),
                f"{r['syncs_per_step']:.2f}",
                f"every {r['log_every_n_steps']} steps",
                sites,
            ]
        )
    if not rows:
        return "(no syncs.json yet: measured on a GPU only)"
    return table(["file", "run", "steps", "host syncs", "per step", "logging", "where (count)"], rows)


SECTIONS: dict[str, Callable[[], str]] = {
    "summary": summary,
    "overhead": overhead_detail,
    "startup": startup_detail,
    "pipeline": pipeline_detail,
    "syncs": syncs_detail,
}


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end generated: {name} -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"benchmarks/README.md has no generated section {name!r}")
        text = pattern.sub(lambda m, body=make(): f"{m.group(1)}{body}\n{m.group(2)}", text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when the README is stale")
    parser.add_argument("--readme", type=Path, default=README, help="the page to rewrite or check")
    args = parser.parse_args(argv)
    current = args.readme.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print(
                "benchmarks/README.md disagrees with benchmarks/results/*.json: run "
                "`.venv/bin/python benchmarks/report.py` and commit the README.",
                file=sys.stderr,
            )
            return 1
        return 0
    args.readme.write_text(fresh)
    print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
