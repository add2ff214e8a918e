"""A study's verdict: judging a claim (`judge_claim`, `judge_censored_claim`), the Holm correction over a
study's claims (`correct`), the pre-registration hash of its protocol, and the verdict.json every study writes.

Every kind judges its claims through the two judge_* helpers (optbench.stats's policy: paired by seed,
clipped intervals, one-sided p-values against the margin, ties with their reason); build_verdict then
applies Holm's correction once, over every claim of the study that carries a p-value, and decides each
such claim on its adjusted p-values.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from optbench.stats import (
    Bounds,
    censored_claim_test,
    censoring_guard,
    claim_test,
    decide,
    holm,
)
from optbench.studies.config import results_dir, seeds_of
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
# What a study fixes before it runs (pre-registration): these keys, any key ending in one of the
# suffixes, each claim's comparison and each case's stated expectation.
PREREGISTERED_KEYS = ("threshold", "confidence", "target", "eps", "failure_acc")
PREREGISTERED_SUFFIXES = ("_margin", "_tolerance")
CLAIM_FIELDS = ("better", "than", "compare", "regime", "metric", "test", "margin")
CASE_FIELDS = ("expected", "expected_ratio", "expected_per_pair", "tolerance")


def _margin_and_test(cfg: DictConfig, claim: DictConfig) -> tuple[float, str]:
    return float(claim.get("margin", cfg.threshold)), str(claim.get("test", "advantage"))


def judge_claim(
    cfg: DictConfig,
    claim: DictConfig,
    a: Sequence[float],
    b: Sequence[float],
    *,
    lower_is_better: bool,
    bounds: Bounds,
    paired: bool = True,
    censored: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A claim's test (`advantage` by default, or `equivalence`) against its margin (default: the study's
    threshold) on the per-seed values `a` (the claimed-better side) and `b`, paired by index unless
    `paired` is false. `censored` counts runs whose values are lower bounds (their length): a verdict such
    a bound could have produced wrongly is inconclusive (stats.censoring_guard), also after the correction.
    The verdict is provisional until build_verdict corrects the study's claims."""
    margin, test = _margin_and_test(cfg, claim)
    judged = claim_test(
        a,
        b,
        test=test,
        margin=margin,
        lower_is_better=lower_is_better,
        paired=paired,
        confidence=float(cfg.confidence),
        bounds=bounds,
    )
    judged["value"] = judged["advantage"]["diff"]
    if censored is not None:
        judged["censored"] = list(censored)
        judged["verdict"] = censoring_guard(judged["verdict"], test, *censored)
    return judged


def judge_censored_claim(
    cfg: DictConfig,
    claim: DictConfig,
    a: Sequence[float | None],
    b: Sequence[float | None],
    horizons_a: Sequence[float],
    horizons_b: Sequence[float],
) -> dict[str, Any]:
    """A claim on a time to a target (lower is better), runs that never reach it censored (stats.censored_claim_test)."""
    margin, test = _margin_and_test(cfg, claim)
    judged = censored_claim_test(
        a, b, horizons_a, horizons_b, test=test, margin=margin, confidence=float(cfg.confidence)
    )
    judged["value"] = judged["advantage"]["diff"]
    return judged


def _tested(case: dict[str, Any]) -> bool:
    p = case.get("p_value")
    return isinstance(p, float) and math.isfinite(p)


def correct(cases: list[dict[str, Any]], confidence: float | None, why_none: str) -> dict[str, Any]:
    """Holm's correction over the claims that carry a p-value (each also carries `p_opposite`, the
    p-value of the test showing it false): per claim `p_adjusted` and `p_opposite_adjusted`, the verdict
    before correction as `verdict_unadjusted`, and the verdict from the adjusted p-values at
    alpha = 1 - confidence. Claims decided without a test (ties, no spread, exact checks) keep theirs."""
    family = [case for case in cases if _tested(case)]
    if not family:
        return {"correction": "none", "correction_note": why_none, "family_size": 0}
    alpha = 1 - float(confidence)
    adjusted = holm([case["p_value"] for case in family])
    opposite = holm([case["p_opposite"] for case in family])
    for case, p, q in zip(family, adjusted, opposite, strict=True):
        case["p_adjusted"], case["p_opposite_adjusted"] = p, q
        case["verdict_unadjusted"] = case["verdict"]
        verdict = decide(p, q, alpha)
        if "censored" in case:
            verdict = censoring_guard(verdict, case["test"], *case["censored"])
        case["verdict"] = verdict
    untested = [case["case"] for case in cases if not _tested(case)]
    note = (
        f"Holm over the {len(family)} claim{'s' if len(family) > 1 else ''} judged by a test (family-wise error "
        f"{alpha:g}); "
        "supported if the adjusted p of the claim's test < alpha, refuted if that of the opposite test is"
    )
    if untested:
        note += f"; not in the family (decided without a test): {', '.join(untested)}"
    return {"correction": "holm", "correction_note": note, "family_size": len(family)}


# --- pre-registration ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def preregistered_fields(cfg: DictConfig) -> dict[str, Any]:
    """What the study fixed before seeing data: margins, thresholds, confidence, seeds, and per claim what
    it compares, on which metric, with which test and margin (defaults filled in, so writing a default out
    does not change the protocol)."""
    fields: dict[str, Any] = {
        key: _plain(cfg[key]) for key in cfg if key in PREREGISTERED_KEYS or str(key).endswith(PREREGISTERED_SUFFIXES)
    }
    fields["seeds"] = seeds_of(cfg)
    if cfg.get("claims"):
        fields["claims"] = {}
        for name, claim in cfg.claims.items():
            entry = {key: _plain(claim[key]) for key in CLAIM_FIELDS if key in claim}
            entry["margin"], entry["test"] = _margin_and_test(cfg, claim)
            fields["claims"][name] = entry
    expectations = {
        name: {key: _plain(case[key]) for key in CASE_FIELDS if key in case}
        for name, case in (cfg.get("cases") or {}).items()
        if OmegaConf.is_dict(case)
    }
    if any(expectations.values()):
        fields["cases"] = {name: entry for name, entry in expectations.items() if entry}
    return fields


def preregistration(cfg: DictConfig, previous: Path | None = None) -> dict[str, Any]:
    """{hash, fields}: the sha256 of the canonical JSON of preregistered_fields; with `changed_from` (the
    old hash) when the verdict.json at `previous` was written for the same preset under another protocol."""
    fields = preregistered_fields(cfg)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=True)
    record: dict[str, Any] = {"hash": hashlib.sha256(canonical.encode()).hexdigest(), "fields": fields}
    try:
        old = json.loads(Path(previous).read_text()) if previous else None
    except (OSError, ValueError):
        old = None
    if old and old.get("preset") == cfg.preset:
        old_hash = (old.get("preregistration") or {}).get("hash")
        if old_hash and old_hash != record["hash"]:
            record["changed_from"] = old_hash
        elif old_hash and old_hash == record["hash"] and (old.get("preregistration") or {}).get("changed_from"):
            record["changed_from"] = old["preregistration"]["changed_from"]  # still the changed protocol
    return record


# --- verdict.json -------------------------------------------------------------------------------------------


def build_verdict(
    cfg: DictConfig, kind: StudyKind, measured: dict[str, Any], output_dir: Path | None = None
) -> dict[str, Any]:
    """verdict.json's content; `output_dir` (default: the study's results folder) holds the previous
    verdict whose pre-registration hash this one is compared with."""
    cases = measured["cases"]
    why_none = getattr(kind, "correction_why", "no claim of this study is judged by a statistical test")
    correction = correct(cases, cfg.get("confidence"), why_none)
    for case in cases:
        if "expected" in case:
            case["as_expected"] = None if case["expected"] is None else case["verdict"] == case["expected"]
    by_verdict: dict[str, list[str]] = {}
    for case in cases:
        by_verdict.setdefault(case["verdict"], []).append(case["case"])
    summary = "; ".join(f"{word}: {', '.join(names)}" for word, names in by_verdict.items())
    settings = {key: _plain(cfg[key]) for key in cfg if key not in DESCRIPTIVE_KEYS}
    expected = [c for c in cases if c.get("expected") is not None]
    previous = Path(output_dir or results_dir(cfg.name)) / "verdict.json"
    return {
        "study": cfg.name,
        "question": cfg.question,
        "claim": cfg.claim,
        "measure": cfg.measure,
        "threshold": float(cfg.threshold),
        "rule": kind.rule(cfg),
        "preset": cfg.preset,
        "settings": settings,
        **correction,
        "preregistration": preregistration(cfg, previous),
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
