"""Checks every claim-study test shares: a well-formed verdict computed from its numbers, and its MLflow runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from conftest import runs_of

from optbench.stats import censoring_guard, decide, holm
from optbench.studies.run import KIND


def check_corrected(verdict: dict) -> None:
    """Holm over the claims with a p-value, each verdict decided on the adjusted p-values; the others
    (ties, no spread, grid rules) carry their reason."""
    family = [c for c in verdict["cases"] if isinstance(c.get("p_value"), float) and math.isfinite(c["p_value"])]
    assert verdict["family_size"] == len(family)
    assert verdict["correction"] == ("holm" if family else "none") and verdict["correction_note"]
    if not family:
        return
    alpha = 1 - verdict["settings"]["confidence"]
    adjusted, opposite = holm([c["p_value"] for c in family]), holm([c["p_opposite"] for c in family])
    for case, p, q in zip(family, adjusted, opposite, strict=True):
        assert case["p_adjusted"] == p and case["p_opposite_adjusted"] == q
        expected = decide(p, q, alpha)
        if "censored" in case:
            expected = censoring_guard(expected, case["test"], *case["censored"])
        assert case["verdict"] == expected, case
    for case in verdict["cases"]:
        if "p_value" in case and case not in family:
            assert case["reason"], case  # decided without a test, and says why


def check_well_formed(verdict: dict, cfg, out: Path, words: tuple[str, ...]) -> None:
    """verdict.json, report.md and a plot in `out`; every case has one of `words` and its value; the
    correction and the pre-registration hash are recorded and reported."""
    assert verdict["study"] == cfg.name and verdict["threshold"] == cfg.threshold and verdict["rule"]
    assert verdict["n_cases"] == len(verdict["cases"]) >= 1
    for case in verdict["cases"]:
        assert case["verdict"] in words, case
        assert verdict["verdicts"][case["case"]] == case["verdict"]
        assert verdict["values"][case["case"]] == case["value"] or math.isnan(case["value"])
    check_corrected(verdict)
    on_disk = json.loads((out / "verdict.json").read_text())
    assert on_disk["verdicts"] == verdict["verdicts"]
    assert len(on_disk["preregistration"]["hash"]) == 64
    report = (out / "report.md").read_text()
    assert verdict["question"] in report and f"threshold {cfg.threshold:g}" in report
    assert all(f"**{case['verdict']}**" in report for case in verdict["cases"])
    assert verdict["preregistration"]["hash"][:16] in report
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
