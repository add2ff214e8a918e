"""Numbers in the docs are generated: `optbench-study docs` writes the measured parts of docs/studies.md and
README.md from the result files, and `--check` fails when a committed doc disagrees with them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optbench.cli.study import main as study_main
from optbench.studies.docs import generate_docs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.unit


def test_the_committed_docs_agree_with_the_committed_results():
    assert generate_docs(ROOT, check=True) == [], "run `optbench-study docs` and commit the docs it rewrites"


def _repo(tmp_path: Path, value: float) -> Path:
    results = tmp_path / "pipelines" / "momentum" / "results"
    results.mkdir(parents=True)
    verdict = {
        "study": "momentum",
        "rule": "a rule",
        "preset": None,
        "cases": [
            {
                "case": "c",
                "statement": "heavy ball beats SGD",
                "value": value,
                "advantage": {"diff": value, "low": value - 0.01, "high": value + 0.01},
                "p_adjusted": 0.02,
                "verdict": "supported",
            }
        ],
        "mlflow": {"runs": 7, "minutes": 1.25},
    }
    (results / "verdict.json").write_text(json.dumps(verdict))
    (tmp_path / "docs").mkdir()
    doc = "Intro.\n<!-- generated: momentum by hand -->\nstale\n<!-- end generated: momentum -->\nOutro.\n"
    (tmp_path / "docs" / "studies.md").write_text(doc)
    return tmp_path


def test_docs_writes_each_generated_part_from_its_verdict_and_leaves_the_prose(tmp_path):
    repo = _repo(tmp_path, 0.0312)
    assert generate_docs(repo) == [repo / "docs" / "studies.md"]
    text = (repo / "docs" / "studies.md").read_text()
    assert text.startswith("Intro.\n<!-- generated: momentum by hand -->\n") and text.endswith("Outro.\n")
    assert "| c | heavy ball beats SGD | 0.0312 [0.0212, 0.0412] | 0.02 | **supported** |" in text
    assert "stale" not in text and "7 training runs in 1.2 minutes" in text
    assert generate_docs(repo, check=True) == []


def test_check_fails_when_a_number_was_edited_by_hand_or_the_result_changed(tmp_path, monkeypatch, capsys):
    repo = _repo(tmp_path, 0.0312)
    generate_docs(repo)
    doc = repo / "docs" / "studies.md"
    doc.write_text(doc.read_text().replace("0.0312 [", "0.0400 ["))
    monkeypatch.chdir(repo)
    with pytest.raises(SystemExit) as exit:
        study_main(["docs", "--check"])
    assert exit.value.code == 1 and "docs/studies.md disagree" in capsys.readouterr().err
    study_main(["docs"])  # regenerate: agrees again
    study_main(["docs", "--check"])
    shutil.rmtree(repo / "pipelines")
    with pytest.raises(SystemExit) as exit:  # a generated part without its result file is an error, not a pass
        study_main(["docs", "--check"])
    assert exit.value.code == 2


def _benchmark_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), *args], capture_output=True, text=True, timeout=60
    )


def test_the_benchmark_numbers_agree_with_the_benchmark_result_files():
    done = _benchmark_report("--check")
    assert done.returncode == 0, done.stderr


def test_the_benchmark_check_fails_when_a_number_is_edited_by_hand(tmp_path):
    readme = tmp_path / "README.md"
    marker = "<!-- generated: summary -->\n"
    original = (ROOT / "benchmarks" / "README.md").read_text()
    readme.write_text(original.replace(marker, marker + "| a hand-copied number | 0.99 |\n", 1))
    done = _benchmark_report("--check", "--readme", str(readme))
    assert done.returncode == 1 and "disagrees with benchmarks/results" in done.stderr
    assert _benchmark_report("--readme", str(readme)).returncode == 0  # regenerating repairs it
    assert _benchmark_report("--check", "--readme", str(readme)).returncode == 0
