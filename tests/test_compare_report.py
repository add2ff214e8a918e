"""What a user sees of a comparison: the HTML says what the Markdown says, both name the data, model and
epochs compared, the comparison run sits in its own experiment, and a bare optbench-compare reads the
experiment a bare optbench-train writes."""

from __future__ import annotations

import html
import re

import pytest
from conftest import compose_config, runs_of
from test_compare import Store

from optbench.compare.analysis import build_comparison
from optbench.compare.publish import compare
from optbench.core.errors import ConfigError


@pytest.fixture
def store(tracking_uri, tmp_path, request, monkeypatch) -> Store:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return Store(tracking_uri, "report-" + re.sub(r"[^\w.-]+", "_", request.node.name), tmp_path / "out")


def _text(page: str) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    page = re.sub(r"<(style|title)>.*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_html_report_says_everything_the_markdown_report_says(store):
    for seed in (0, 1):
        store.run("adam", seed, val_acc=(0.5, 0.8, 0.9 - seed / 100), test_acc=0.9)
        store.run("sgd", seed, val_acc=(0.4, 0.6, 0.7 + seed / 100), test_acc=0.7)

    compare(store.cfg("optimizers=[adam,sgd,lion]"))

    markdown = (store.out / "report.md").read_text()
    page = _text((store.out / "report.html").read_text())
    for line in markdown.splitlines():
        if not line.strip() or line.startswith("|---") or line.startswith("!["):
            continue
        words = line.lstrip("#- ").replace("**", "")
        cells = (
            [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", words)] if line.startswith("|") else [words]
        )
        for cell in filter(None, cells):
            assert " ".join(cell.split()) in page, cell
    assert "Ranking" in page and "adam (0.9000) > sgd (0.7000)" in page
    assert markdown.count("![") == (store.out / "report.html").read_text().count("data:image/png;base64,")


def test_title_run_and_params_name_the_data_model_and_epochs_and_the_run_has_its_own_experiment(store):
    training = {store.run("adam", 0), store.run("sgd", 0)}

    compare(store.cfg())

    assert (store.out / "report.md").read_text().startswith("# Optimizer comparison: digits, mlp, 3 epochs\n")
    assert "<title>Optimizer comparison: digits, mlp, 3 epochs</title>" in (store.out / "report.html").read_text()
    assert {r.info.run_id for r in runs_of(store.client, store.experiment)} == training
    (run,) = runs_of(store.client, store.experiment + "-compare")
    assert run.info.run_name.startswith("compare-digits-mlp-3ep-")
    params = run.data.params
    assert (params["compared.data"], params["compared.model"], params["compared.epochs"]) == ("digits", "mlp", "3")
    assert "None" not in params.values()
    assert store.client.get_experiment_by_name(store.experiment + "-compare").tags["mlflow.experimentKind"] == (
        "custom_model_development"
    )


def test_epochs_selects_runs_and_max_epochs_is_its_deprecated_name(store):
    store.run("adam", 0)
    store.run("adam", 1, params={"trainer.max_epochs": 5})

    assert list(build_comparison(store.cfg("epochs=5")).runs.seed) == [1]
    assert list(build_comparison(store.cfg("max_epochs=5")).runs.seed) == [1]
    with pytest.raises(ConfigError, match="max_epochs is the old name"):
        build_comparison(store.cfg("epochs=3", "max_epochs=5"))
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        build_comparison(store.cfg("epochs=0"))


def test_a_bare_compare_reads_the_experiment_a_bare_train_writes():
    assert compose_config(config_name="compare").experiment == compose_config().experiment
