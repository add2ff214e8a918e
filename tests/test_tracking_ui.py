"""What MLflow's own UI shows of an optbench run, read back from a real SQLite store: the experiment opens
in the model-training view, and the run fills the panels MLflow has for it (description, Created by,
Source, Datasets, system metrics), with null settings left out instead of logged as "None"."""

from __future__ import annotations

from conftest import runs_of

from optbench.tracking import experiment_id
from optbench.training.train import train

FAST = ("data=digits", "model=mlp", "optimizer=sgd", "seed=3")


def test_a_training_run_fills_mlflows_own_panels(make_cfg, mlflow_client):
    cfg = make_cfg(*FAST)
    train(cfg)

    experiment = mlflow_client.get_experiment_by_name(cfg.experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (run,) = runs_of(mlflow_client, cfg.experiment)
    tags = run.data.tags
    note = tags["mlflow.note.content"]
    assert "sgd" in note and "mlp" in note and "digits" in note and "seed 3" in note
    assert "Command: `" in note
    assert tags["mlflow.user"] and tags["mlflow.source.name"] and tags["mlflow.source.type"] == "LOCAL"
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "digits"
    assert dataset_input.dataset.digest == tags["optbench.data_fingerprint"]
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    system = [key for key in run.data.metrics if key.startswith("system/")]
    assert "system/cpu_utilization_percentage" in system
    assert "system/system_memory_usage_megabytes" in system


def test_null_settings_are_left_out_of_the_params_not_logged_as_none(make_cfg, mlflow_client):
    cfg = make_cfg(*FAST)
    assert cfg.data.prepared is None
    train(cfg)

    (run,) = runs_of(mlflow_client, cfg.experiment)
    params = run.data.params
    assert "data.prepared" not in params
    assert [key for key, value in params.items() if value == "None"] == []


def test_system_metrics_can_be_turned_off(make_cfg, mlflow_client, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    cfg = make_cfg(*FAST)
    train(cfg)

    (run,) = runs_of(mlflow_client, cfg.experiment)
    assert [key for key in run.data.metrics if key.startswith("system/")] == []


def test_an_older_experiment_gets_the_kind_and_a_chosen_kind_is_kept(mlflow_client):
    older = mlflow_client.create_experiment("made-before-the-kind-tag")
    chosen = mlflow_client.create_experiment("a-kind-of-its-own", tags={"mlflow.experimentKind": "finetuning"})

    assert experiment_id(mlflow_client, "made-before-the-kind-tag") == older
    experiment_id(mlflow_client, "a-kind-of-its-own")

    assert mlflow_client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
    assert mlflow_client.get_experiment(chosen).tags["mlflow.experimentKind"] == "finetuning"
