"""run_study(cfg): open the study's verdict run in MLflow, measure, decide, and write verdict.json,
report.md and the plot (also logged as artifacts of the verdict run, tag optbench.kind=study_verdict,
which ends FINISHED, FAILED or KILLED)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag
from omegaconf import DictConfig

from optbench.core.files import write_text
from optbench.studies.config import results_dir
from optbench.studies.registry import load_kind
from optbench.studies.report import render_report
from optbench.studies.runner import Study
from optbench.studies.verdict import FAILS, HOLDS, build_verdict
from optbench.tracking import TAG_PREFIX, flatten, log_values, open_run, open_store

KIND = "study_verdict"


def run_study(cfg: DictConfig, output_dir: Path | None = None) -> dict[str, Any]:
    """Measure, decide, write verdict.json, report.md and the plot, and log them to the verdict run."""
    kind = load_kind(cfg.kind, cfg.name)
    output_dir = Path(output_dir or results_dir(cfg.name))
    client = open_store()
    experiment = f"study-{cfg.name}"
    name = f"verdict-{cfg.name}" + (f"-{cfg.preset}" if cfg.preset else "")
    tags = {TAG_PREFIX + "kind": KIND, TAG_PREFIX + "study": cfg.name, TAG_PREFIX + "preset": str(cfg.preset)}
    started = time.monotonic()
    with open_run(client, experiment, name, tags) as run_id:
        params = {k: str(v)[:6000] for k, v in flatten(cfg).items() if not k.startswith(("presets", "notes"))}
        log_values(client, run_id, params=params)
        with tempfile.TemporaryDirectory(prefix=f"optbench-study-{cfg.name}-") as workdir:
            study = Study(cfg, client, run_id, Path(workdir))
            measured = kind.measure(study)
        verdict = build_verdict(cfg, kind, measured, output_dir)
        minutes = round((time.monotonic() - started) / 60, 2)
        verdict["mlflow"] = {"experiment": experiment, "run_id": run_id, "runs": study.n_runs, "minutes": minutes}
        output_dir.mkdir(parents=True, exist_ok=True)
        kind.plot(verdict, output_dir / kind.plot_name)
        write_text(output_dir / "verdict.json", json.dumps(verdict, indent=2, allow_nan=True) + "\n")
        write_text(output_dir / "report.md", render_report(verdict, kind))
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"value/{c['case']}", float(c["value"]), now, 0) for c in verdict["cases"] if c["value"] is not None
        ]
        metrics += [
            Metric(f"holds/{c['case']}", float(c["verdict"] in HOLDS), now, 0)
            for c in verdict["cases"]
            if c["verdict"] in HOLDS + FAILS
        ]
        metrics.append(Metric("study/minutes", (time.monotonic() - started) / 60, now, 0))
        log_values(client, run_id, metrics=metrics)
        client.log_batch(run_id, tags=[RunTag(TAG_PREFIX + "verdict", verdict["summary"][:5000])])
        for name in ("verdict.json", "report.md", kind.plot_name):
            client.log_artifact(run_id, str(output_dir / name))
    return verdict
