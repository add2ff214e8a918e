"""A study's verdict: the judgement of a claim on an interval, and the verdict.json every study writes."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from optbench.stats import interval_verdict
from optbench.studies.registry import StudyKind

# Keys that describe the study rather than set it up: left out of verdict.json's `settings`.
DESCRIPTIVE_KEYS = (
    "name",
    "kind",
    "question",
    "claim",
    "measure",
    "threshold",
    "cases",
    "claims",
    "notes",
    "presets",
    "preset",
)
# Verdict words that mean "the claim holds" (logged as holds/<case> = 1) and "it does not" (0).
HOLDS = ("equivalent", "supported", "as claimed")
FAILS = ("not equivalent", "refuted", "not as claimed")


def judge_interval(cfg: DictConfig, claim: DictConfig, ci: dict[str, float]) -> dict[str, Any]:
    """A claim's test (`advantage` by default, or `equivalence`), its margin (default: the study's
    threshold) and the verdict the interval `ci` of the claimed-better side's advantage gives."""
    margin = float(claim.get("margin", cfg.threshold))
    test = claim.get("test", "advantage")
    return {"test": test, "margin": margin, "verdict": interval_verdict(ci, margin, test)}


def build_verdict(cfg: DictConfig, kind: StudyKind, measured: dict[str, Any]) -> dict[str, Any]:
    cases = measured["cases"]
    for case in cases:
        if "expected" in case:
            case["as_expected"] = None if case["expected"] is None else case["verdict"] == case["expected"]
    by_verdict: dict[str, list[str]] = {}
    for case in cases:
        by_verdict.setdefault(case["verdict"], []).append(case["case"])
    summary = "; ".join(f"{word}: {', '.join(names)}" for word, names in by_verdict.items())
    settings = {
        key: OmegaConf.to_container(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key not in DESCRIPTIVE_KEYS
    }
    expected = [c for c in cases if c.get("expected") is not None]
    return {
        "study": cfg.name,
        "question": cfg.question,
        "claim": cfg.claim,
        "measure": cfg.measure,
        "threshold": float(cfg.threshold),
        "rule": kind.rule(cfg),
        "preset": cfg.preset,
        "settings": settings,
        **{key: value for key, value in measured.items() if key != "cases"},
        "cases": cases,
        "verdicts": {c["case"]: c["verdict"] for c in cases},
        "values": {c["case"]: c["value"] for c in cases},  # flat numbers for `dvc metrics show`
        "summary": summary,
        "as_expected": sum(bool(c["as_expected"]) for c in expected) if expected else None,
        "n_expected": len(expected),
        "n_cases": len(cases),
        "skipped": measured.get("skipped", []),
        "notes": list(cfg.get("notes") or []),
    }
