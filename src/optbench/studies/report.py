"""A study's report: number formatting, report.md, and the terminal tables of optbench-study."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from optbench.core.config import load_option
from optbench.studies.config import results_dir, study_names
from optbench.studies.registry import StudyKind


def fmt(value: Any, spec: str = ".3g") -> str:
    """A number for a report cell; n/a for a missing or NaN one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def fmt_ci(stat: dict[str, float], spec: str = ".4f") -> str:
    """mean [low, high] (or just the mean when there is no interval)."""
    if not math.isfinite(stat.get("low", math.nan)):
        return fmt(stat.get("mean", stat.get("diff")), spec)
    return f"{fmt(stat.get('mean', stat.get('diff')), spec)} [{fmt(stat['low'], spec)}, {fmt(stat['high'], spec)}]"


def render_report(verdict: dict[str, Any], kind: StudyKind) -> str:
    s = verdict["settings"]
    expected = (
        f" As predicted: {verdict['as_expected']} of {verdict['n_expected']} cases." if verdict["n_expected"] else ""
    )
    runs = f"; runs: `{' '.join(s['train'])}`" if s.get("train") else ""
    seeds = f"seeds {s['seeds']}" if s.get("seeds") else f"seed {s['seed']}"
    lines = [
        f"# Study {verdict['study']}: {verdict['question']}",
        "",
        f"**Claim.** {verdict['claim']}",
        "",
        f"**Measure.** {verdict['measure']}.",
        "",
        f"**Threshold.** {verdict['rule']} (threshold {verdict['threshold']:g}).",
        "",
        f"**Verdict.** {verdict['summary']}.{expected}",
        "",
        *protocol_lines(verdict),
        f"Settings: {seeds}"
        + (f", steps {s['steps']}" if s.get("steps") else "")
        + (f", preset {verdict['preset']}" if verdict["preset"] else "")
        + f"{runs}.",
        "",
        *kind.report(verdict),
        "",
        *claim_tests(verdict),
        f"![{kind.plot_name}]({kind.plot_name})",
        "",
    ]
    if verdict["skipped"]:
        lines += ["## Not measured on this machine", ""]
        lines += [f"- **{item['what']}**: {item['why']}" for item in verdict["skipped"]] + [""]
    if verdict["notes"]:
        lines += ["## Notes", ""] + [f"- {note}" for note in verdict["notes"]] + [""]
    lines.append(
        f"MLflow: experiment `{verdict['mlflow']['experiment']}`, verdict run `{verdict['mlflow']['run_id']}`."
    )
    return "\n".join(lines) + "\n"


def protocol_lines(verdict: dict[str, Any]) -> list[str]:
    """The pre-registration hash (and a warning when the protocol changed after a run) and the correction."""
    prereg = verdict.get("preregistration") or {}
    lines = []
    if prereg:
        lines.append(
            f"**Pre-registration.** Protocol hash `{prereg['hash'][:16]}` (sha256 of the margins, thresholds, "
            "confidence, seeds and claims, in verdict.json)."
        )
        if prereg.get("changed_from"):
            lines[-1] += (
                f" **The protocol changed after a run**: the previous verdict of this preset was computed under "
                f"`{prereg['changed_from'][:16]}`."
            )
        lines.append("")
    if "correction" in verdict:
        lines += [f"**Multiple comparisons.** {verdict['correction']}: {verdict['correction_note']}.", ""]
    return lines


def claim_tests(verdict: dict[str, Any]) -> list[str]:
    """Per claim: the test, its p-value before and after the correction, the power note and the reason
    of a verdict reached without a test."""
    judged = [c for c in verdict["cases"] if "p_value" in c]
    if not judged:
        return []
    lines = [
        "### Tests",
        "",
        "p: one-sided p-value of the claim's test against its margin (equivalence: TOST); opposite: of the test "
        "showing the claim false; adjusted: Holm over the study's claims. Detectable: the smallest true "
        "difference (beyond the margin) the seeds detect with 80% power at two-sided alpha = 1 − confidence.",
        "",
        "| claim | method | p | p adjusted | opposite p adjusted | detectable | verdict (before correction) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in judged:
        power = c.get("power_note") or fmt(c.get("detectable_effect"), ".3g")
        before = c.get("verdict_unadjusted") or c["verdict"]
        reason = f"; {c['reason']}" if c.get("reason") else ""
        lines.append(
            f"| {c['case']} | {c.get('method', '')} | {fmt(c['p_value'], '.3g')} | {fmt(c.get('p_adjusted'), '.3g')} "
            f"| {fmt(c.get('p_opposite_adjusted'), '.3g')} | {power} | **{c['verdict']}** ({before}{reason}) |"
        )
    return [*lines, ""]


def last_verdict(name: str) -> dict[str, Any] | None:
    path = results_dir(name) / "verdict.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _console() -> Console:
    # A pipe gets wide lines rather than cells cut to fit 80 columns.
    return Console() if Console().is_terminal else Console(width=200)


def list_studies(console: Console | None = None) -> None:
    table = Table(title="optbench claim studies", show_lines=True)
    for column in ("Study", "Question", "Last verdict"):
        table.add_column(column)
    for name in study_names():
        cfg = load_option("study", name)
        verdict = last_verdict(name)
        if verdict is None:
            shown = "not run yet"
        else:
            preset = f" [preset {verdict['preset']}]" if verdict.get("preset") else ""
            shown = f"{verdict['summary']}{preset}"
        table.add_row(Text(name), Text(str(cfg.get("question", ""))), Text(shown))
    (console or _console()).print(table)


def print_verdict(verdict: dict[str, Any], output_dir: Path) -> None:
    console = _console()
    table = Table(title=f"{verdict['study']}: {verdict['question']}")
    for column in ("Case", "Value", "Verdict", "Expected"):
        table.add_column(column)
    for c in verdict["cases"]:
        table.add_row(c["case"], fmt(c["value"]), c["verdict"], str(c.get("expected") or ""))
    console.print(table)
    console.print(Text(f"Rule: {verdict['rule']}."))
    console.print(Text(f"Report: {output_dir / 'report.md'} (MLflow run {verdict['mlflow']['run_id']})"))
