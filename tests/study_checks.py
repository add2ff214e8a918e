"""Checks every claim-study test shares: a well-formed verdict computed from its numbers, and its MLflow runs."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import runs_of

from optbench.studies.run import KIND


def check_well_formed(verdict: dict, cfg, out: Path, words: tuple[str, ...]) -> None:
    """verdict.json, report.md and a plot in `out`; every case has one of `words` and its value."""
    assert verdict["study"] == cfg.name and verdict["threshold"] == cfg.threshold and verdict["rule"]
    assert verdict["n_cases"] == len(verdict["cases"]) >= 1
    for case in verdict["cases"]:
        assert case["verdict"] in words, case
        assert verdict["verdicts"][case["case"]] == case["verdict"]
        assert verdict["values"][case["case"]] == case["value"]
    on_disk = json.loads((out / "verdict.json").read_text())
    assert on_disk["verdicts"] == verdict["verdicts"]
    report = (out / "report.md").read_text()
    assert verdict["question"] in report and f"threshold {cfg.threshold:g}" in report
    assert all(f"**{case['verdict']}**" in report for case in verdict["cases"])
    assert any(out.glob("*.png"))


def check_mlflow(client, name: str, verdict: dict, n_children: int) -> list:
    """The verdict run FINISHED with its files, and `n_children` FINISHED runs nested directly under it."""
    parent = client.get_run(verdict["mlflow"]["run_id"])
    assert parent.data.tags["optbench.kind"] == KIND and parent.info.status == "FINISHED"
    assert {"verdict.json", "report.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = [
        r for r in runs_of(client, f"study-{name}") if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    assert len(children) == n_children
    assert all(r.info.status == "FINISHED" for r in children)
    return children
