"""Shared fixtures: real Hydra composition of conf/, a real SQLite MLflow store in a temporary directory."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from optbench.core.config import compose_config  # noqa: F401  (tests import it from here)

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(autouse=True)
def _unit_tests_do_not_train(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked `unit` fails if it starts a Lightning fit: the unit tier stays fast by construction."""
    if request.node.get_closest_marker("unit") is None:
        return
    import lightning.pytorch as L

    def refuse(*args, **kwargs):
        pytest.fail("a test marked unit started Trainer.fit: drop the marker or the training", pytrace=False)

    monkeypatch.setattr(L.Trainer, "fit", refuse)


@pytest.fixture(autouse=True)
def _in_a_fresh_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory: what a command writes relative to it (checkpoints/, outputs/,
    mlflow.db) can neither leak into the checkout nor be resumed by another test running in parallel."""
    monkeypatch.chdir(tmp_path)


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
            f"checkpoint.dir={tmp_path / 'checkpoints'}",
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
