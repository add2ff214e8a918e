"""What DVC shows of the project in a terminal and a browser: `dvc plots show` writes a page that loads
only the vendored Vega scripts (it renders offline), and `dvc metrics show` at the root lists the main
pipeline's per-optimizer numbers, one narrow row each, without the studies' verdicts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "vendor" / "vega" / "dvc_plots.html"


class Scripts(HTMLParser):
    """The src of every <script> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "script" and dict(attrs).get("src"):
            self.sources.append(dict(attrs)["src"])


def dvc(*args: str, cwd: Path = ROOT) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_the_plots_page_loads_only_the_vendored_scripts(tmp_path):
    # The page is written where `dvc plots show` puts it (dvc_plots/ at the repository root), but in a copy:
    # the checkout is left alone. Its script paths are relative to that folder.
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc("init", "--no-scm", cwd=repo)
    for name in ("dvc.yaml", "params.yaml", "vendor/vega", "results/compare", ".dvc/plots", ".dvc/config"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, repo / name, dirs_exist_ok=True)
        else:
            shutil.copy(ROOT / name, repo / name)

    dvc("plots", "show", cwd=repo)  # the template comes from .dvc/config (plots.html_template)

    page = repo / "dvc_plots" / "index.html"
    parser = Scripts()
    parser.feed(page.read_text())
    assert len(parser.sources) == 3 and "vegaEmbed(" in page.read_text()
    for source in parser.sources:
        assert "://" not in source and not source.startswith("//"), f"remote script {source}"
        assert (page.parent / source).resolve().is_file(), f"{source} is not beside the page"


def test_the_plot_template_keeps_dvcs_cdn_scripts_out():
    text = TEMPLATE.read_text()
    assert "{plot_divs}" in text and "{scripts}" not in text  # {scripts} is where DVC puts its CDN links
    assert "html_template = ../vendor/vega/dvc_plots.html" in (ROOT / ".dvc" / "config").read_text()


@pytest.mark.skipif(not (ROOT / "results" / "compare" / "metrics").is_dir(), reason="no main-pipeline results")
def test_root_metrics_are_one_narrow_row_per_optimizer_without_the_studies():
    shown = dvc("metrics", "show")

    assert "verdict.json" not in shown and "results/train/" not in shown
    assert "failed to load" not in shown.lower()
    rows = [line for line in shown.splitlines() if line.startswith("results/compare/metrics/")]
    assert len(rows) == len(list((ROOT / "results" / "compare" / "metrics").glob("*.json"))) >= 2
    assert max(len(line) for line in shown.splitlines()) <= 160
