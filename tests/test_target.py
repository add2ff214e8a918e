"""optbench-target: the reference procedure that sets optbench-compare's target a priori, its checks, and the
targets file it writes (which optbench-compare then reads)."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys

import pytest
import yaml
from conftest import compose_config

from optbench.compare.publish import compare
from optbench.compare.reference import check_target_config, train_overrides
from optbench.core.errors import ConfigError
from optbench.training.data import load_dataset
from optbench.training.train import train

TARGET = [sys.executable, "-m", "optbench.cli.target"]  # the optbench-target entry point's module
TINY = ["data=digits", "model=logreg", "trainer=fast", "epochs=1", "seeds=[100,101]"]


def target_cfg(*overrides: str):
    return compose_config(*overrides, config_name="target")


@pytest.mark.unit
def test_defaults_are_two_reference_optimizers_on_ten_seeds_disjoint_from_the_evaluation_seeds():
    cfg = target_cfg()

    optimizers, seeds, best = check_target_config(cfg)

    assert optimizers == ["adamw", "momentum"] and seeds == list(range(100, 110))
    assert not set(seeds) & set(cfg.evaluation_seeds) and best == {"adamw": None, "momentum": None}
    assert cfg.output == "conf/targets/mnist5k-cnn.yaml"


@pytest.mark.unit
def test_the_reference_runs_use_optbench_train_configs_with_the_tuned_settings(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"optimizer": "adamw", "best_params": {"optimizer.lr": 0.01}}))
    cfg = target_cfg(*TINY, f"best={{adamw: {best}}}", "train_overrides=['batch_size=64']")

    _, _, files = check_target_config(cfg)
    overrides = train_overrides(cfg, "adamw", 100, files["adamw"], "fast")

    assert files == {"adamw": str(best), "momentum": None}
    assert overrides[:4] == ["data=digits", "model=logreg", "optimizer=adamw", "seed=100"]
    assert {"trainer=fast", f"best={best}"} <= set(overrides) and overrides[-1] == "batch_size=64"
    assert compose_config(*overrides).batch_size == 64  # a valid optbench-train command line


@pytest.mark.unit
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["seeds=[5,100]"], r"seeds \[5\] are also evaluation seeds"),
        (["seeds=[]"], "seeds must be a non-empty list"),
        (["seeds=[100,100]"], "must not repeat"),
        (["reference_optimizers=[]"], "reference_optimizers is empty"),
        (["best={lion: x.json}"], "best names lion, which are not reference_optimizers"),
        (["best={adamw: /nonexistent/best.json}"], "best.adamw=/nonexistent/best.json: no such file"),
        (["epochs=0"], "epochs must be a positive integer"),
    ],
)
def test_bad_reference_settings_are_refused_before_anything_trains(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_target_config(target_cfg(*overrides))


@pytest.mark.unit
def test_trainer_settings_go_on_the_command_itself_not_into_train_overrides():
    cfg = target_cfg("train_overrides=['trainer.max_epochs=3']")
    with pytest.raises(ConfigError, match="set the trainer of the reference runs on optbench-target itself"):
        train_overrides(cfg, "adamw", 100, None, "cpu")


@pytest.mark.unit
def test_the_command_line_starts_without_heavy_libraries_and_reports_bad_input(tmp_path):
    code = (
        "import sys\n"
        "sys.argv = ['optbench-target', '--cfg', 'job']\n"
        "from optbench.cli.target import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'mlflow', 'pandas') if m in sys.modules))\n"
    )
    started = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in started.stdout, started.stdout + started.stderr

    refused = subprocess.run([*TARGET, "seeds=[0,1]"], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "optbench: error: seeds [0, 1] are also evaluation seeds" in refused.stderr
    assert not (tmp_path / "conf").exists()


@pytest.mark.slow
def test_end_to_end_the_targets_file_is_written_with_provenance_and_compare_reads_it(make_cfg, tmp_path):
    experiment = make_cfg().experiment
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"optimizer": "adamw", "best_params": {"optimizer.lr": 0.01}}))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # make_cfg set MLFLOW_TRACKING_URI to the test store

    made = subprocess.run(
        [*TARGET, *TINY, f"experiment={experiment}-reference", f"best={{adamw: {best}}}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert made.returncode == 0, made.stderr[-3000:]
    path = tmp_path / "conf" / "targets" / "digits-logreg.yaml"
    content = yaml.safe_load(path.read_text())
    runs = content["reference"]["runs"]
    assert set(runs) == {"adamw", "momentum"} and content["reference"]["seeds"] == [100, 101]
    medians = {name: statistics.median(runs[name]["values"].values()) for name in runs}
    chosen = max(medians, key=medians.get)
    assert content["reference"]["optimizer"] == chosen and content["target"] == pytest.approx(medians[chosen])
    assert (content["metric"], content["direction"], content["reference"]["epochs"]) == ("val/acc", "maximize", 1)
    assert runs["adamw"]["best_file"] == str(best) and runs["adamw"]["settings"]["optimizer"]["lr"] == 0.01
    assert runs["momentum"]["best_file"] is None and runs["momentum"]["settings"]["optimizer"]["lr"] == 0.05
    provenance = content["provenance"]
    assert provenance["data_fingerprint"] == load_dataset(compose_config("data=digits").data).fingerprint
    assert len(provenance["git_commit"]) == 40 and provenance["date"].endswith("Z")
    assert set(provenance["mlflow_runs"]["adamw"]) == {100, 101}

    for optimizer in ("adamw", "momentum"):  # the runs being compared: evaluation seeds, another experiment
        train(make_cfg("data=digits", "model=logreg", f"optimizer={optimizer}", "seed=0"))
    summary = compare(
        compose_config(
            f"experiment={experiment}", f"output_dir={tmp_path / 'compare'}", "data=digits", "model=logreg",
            config_name="compare",
        )
    )  # fmt: skip

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert summary["target_source"] == f"conf/targets/digits-logreg.yaml (sha256:{digest})"
    assert summary["target"] == pytest.approx(content["target"]) and summary["n_runs"] == 2
    assert "set a priori in conf/targets/digits-logreg.yaml" in (tmp_path / "compare" / "report.md").read_text()
