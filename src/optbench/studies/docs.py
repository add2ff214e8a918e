"""The measured parts of the docs, generated from the result files; nobody copies a number by hand.

    optbench-study docs            # rewrite every generated part of docs/studies.md and README.md
    optbench-study docs --check    # exit 1 when a committed doc disagrees with its result files (CI)

A generated part sits between two markers in a Markdown file, and everything between them is replaced:

    <!-- generated: adam_vs_sgd by `optbench-study docs` from pipelines/adam_vs_sgd/results/verdict.json -->
    ...
    <!-- end generated: adam_vs_sgd -->

Parts: `studies` (one line per study: verdicts, runs, minutes), one per study (each claim with its value,
interval, adjusted p-value and verdict), `main-results` (the table of results/compare/report.md, the
main pipeline's report) and `suite-scores` (the score table of the workload suite's report). The prose around them is written by hand and holds no measured number.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optbench.core.errors import ConfigError
from optbench.studies.config import RESULTS_ROOT, study_names

MARKER = re.compile(r"<!-- generated: (?P<key>[\w.-]+)[^>]*-->\n(?P<body>.*?)<!-- end generated: (?P=key) -->", re.S)
MAIN_REPORT = Path("results/compare/report.md")
SUITE_REPORT = Path("pipelines/suite/results/report/report.md")
DOCS = (Path("docs/studies.md"), Path("README.md"))


@dataclass(frozen=True)
class Part:
    """One generated part: the result file it comes from and how its Markdown is rendered."""

    key: str
    source: Path
    render: Callable[[], str]


def _number(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—" if value is None or math.isnan(value) else ("∞" if value > 0 else "−∞")
    if isinstance(value, (int, float)):
        return format(value, spec).replace("-", "−")
    return str(value)


def _interval(case: dict[str, Any]) -> str:
    """A case's value with its interval where it has one (advantage, difference: {diff, low, high})."""
    for key in ("advantage", "difference"):
        ci = case.get(key)
        if isinstance(ci, dict) and "low" in ci:
            bounds = f" [{_number(ci['low'])}, {_number(ci['high'])}]" if math.isfinite(ci["low"] or math.nan) else ""
            return f"{_number(ci.get('diff', case.get('value')))}{bounds}"
    return _number(case.get("value"))


def study_table(verdict: dict[str, Any]) -> str:
    """Each claim of a study: statement, value [interval], adjusted p-value where judged on one, verdict."""
    cases = verdict["cases"]
    with_p = any("p_adjusted" in c for c in cases)
    with_expected = any(c.get("expected") is not None for c in cases)
    with_claim = any(c.get("statement") for c in cases)
    header = (
        ["case"]
        + (["claim"] if with_claim else [])
        + ["value [interval]"]
        + (["p (Holm)"] if with_p else [])
        + ["verdict"]
    )
    header += ["predicted"] if with_expected else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cases:
        row = [c["case"]] + ([c.get("statement", "")] if with_claim else []) + [_interval(c)]
        row += [_number(c.get("p_adjusted"), ".3g")] if with_p else []
        row += [f"**{c['verdict']}**"]
        row += [str(c.get("expected") or "")] if with_expected else []
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
    preset = f", preset `{verdict['preset']}`" if verdict.get("preset") else ""
    lines += [
        "",
        f"Rule: {verdict['rule']}. {_runs(verdict)}{preset}; every number of the study: "
        f"`pipelines/{verdict['study']}/results/verdict.json`, its tables: `report.md` beside it.",
    ]
    return "\n".join(lines)


def _runs(verdict: dict[str, Any]) -> str:
    mlflow = verdict.get("mlflow", {})
    minutes = f" in {mlflow['minutes']:.1f} minutes" if "minutes" in mlflow else ""
    return f"{mlflow.get('runs', '?')} training runs{minutes}"


def studies_table(verdicts: dict[str, dict[str, Any]]) -> str:
    lines = ["| study | verdicts | runs | minutes |", "|---|---|---|---|"]
    for name, verdict in verdicts.items():
        counts: dict[str, int] = {}
        for case in verdict["cases"]:
            counts[case["verdict"]] = counts.get(case["verdict"], 0) + 1
        words = ", ".join(f"{n} {word}" for word, n in counts.items())
        mlflow = verdict.get("mlflow", {})
        lines.append(
            f"| [{name}](#{name}) | {words} | {mlflow.get('runs', '—')} | {_number(mlflow.get('minutes'), '.1f')} |"
        )
    return "\n".join(lines)


def main_results(report: Path) -> str:
    """The first table of the main pipeline's report, with the line that says how the target was set."""
    lines = report.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        raise ConfigError(f"{report} has no table: rerun the main pipeline (dvc repro) to write it.")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    target = [line for line in lines if line.lstrip("*").lower().startswith("target")]
    return "\n".join(lines[start:end] + ([""] + target[:1] if target else []))


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read {path} ({err}): run the study (dvc repro -P) to write it.") from None


def parts(root: Path) -> list[Part]:
    verdict_files = {name: root / RESULTS_ROOT / name / "results" / "verdict.json" for name in study_names()}
    verdict_files = {name: path for name, path in verdict_files.items() if path.is_file()}
    verdicts = {name: _load(path) for name, path in verdict_files.items()}
    found = [
        Part("studies", root / RESULTS_ROOT, lambda: studies_table(verdicts)),
        *(Part(name, verdict_files[name], lambda v=verdicts[name]: study_table(v)) for name in verdicts),
    ]
    if (root / MAIN_REPORT).is_file():
        found.append(Part("main-results", root / MAIN_REPORT, lambda: main_results(root / MAIN_REPORT)))
    if (root / SUITE_REPORT).is_file():
        from optbench.suite.report import score_section

        found.append(Part("suite-scores", root / SUITE_REPORT, lambda: score_section(root / SUITE_REPORT)))
    return found


def regenerate(text: str, available: dict[str, Part], path: Path) -> str:
    """`text` with the body of each generated part replaced by its freshly rendered Markdown."""

    def replace(match: re.Match) -> str:
        key = match["key"]
        if key not in available:
            raise ConfigError(f"{path}: generated part '{key}' has no result file to come from.")
        head = match[0][: match.start("body") - match.start()]
        return f"{head}{available[key].render().rstrip()}\n<!-- end generated: {key} -->"

    return MARKER.sub(replace, text)


def generate_docs(root: Path = Path("."), check: bool = False) -> list[Path]:
    """Rewrite (or, with `check`, only compare) the generated parts of the docs; the files that differ."""
    available = {part.key: part for part in parts(root)}
    differ = []
    for doc in DOCS:
        path = root / doc
        if not path.is_file():
            continue
        text = path.read_text()
        fresh = regenerate(text, available, path)
        if fresh != text:
            differ.append(path)
            if not check:
                path.write_text(fresh)
    return differ
