"""Shared fixtures: real Hydra composition of conf/, a real SQLite MLflow store in a temporary directory."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

from optbench.train import CONFIG_DIR

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def compose_config(*overrides: str, config_name: str = "train") -> DictConfig:
    """Compose conf/<config_name>.yaml exactly as the command line would, with `overrides`."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)  # so ${hydra:...} interpolations and HydraConfig.get() work
    with open_dict(cfg):
        del cfg["hydra"]  # the task function never sees the hydra node
    return cfg


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real SQLite MLflow store for the session, created once (creation is slow and not concurrent-safe)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture
def make_cfg(
    tmp_path: Path, tracking_uri: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., DictConfig]:
    """Compose a config shrunk for CPU tests: trainer=fast, the session's MLflow store, output in tmp_path.

    Each test logs to its own MLflow experiment, named after the test.
    """

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)  # how users point optbench at a store
    experiment = re.sub(r"[^\w.-]+", "_", request.node.name)  # [params] would break the override grammar

    def make(*overrides: str) -> DictConfig:
        base = [
            "trainer=fast",
            f"metrics_path={tmp_path / 'metrics.json'}",
            f"experiment={experiment}",
        ]
        return compose_config(*base, *overrides)

    return make


@pytest.fixture
def mlflow_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri)


def runs_of(client: MlflowClient, experiment: str) -> list:
    """All runs of an MLflow experiment, oldest first."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment named {experiment}"
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
