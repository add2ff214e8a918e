"""Session fixtures for the cluster tests: a real one-node SLURM cluster, PostgreSQL and an MLflow tracking server,
started on 127.0.0.1 the first time a test asks for one and stopped by PID when the session ends.

These tests run in one pytest process without xdist (`make test-cluster`): the services belong to the session.
Every test here is marked `cluster` (the default suite deselects them).
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # services.py is a script as well as this folder's helper module

import services  # noqa: E402

HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI time limit, `timeout`) ends the session like Ctrl-C, so the fixtures' teardown still stops
    every service by PID instead of leaving daemons behind."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/cluster needs the services (or is about them): mark it `cluster`."""
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's work folder: configs, logs and the PIDs of every service started; all stopped at the end."""
    workdir = tmp_path_factory.mktemp("services")
    yield workdir
    services.stop_all(workdir)


@pytest.fixture(scope="session")
def slurm(services_dir: Path) -> Iterator[dict[str, str]]:
    """A one-node SLURM cluster: its client environment ({"SLURM_CONF": ...}), also set in os.environ."""
    env = services.start_slurm(services_dir)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # sbatch, srun and submitit in this process (and the jobs they start) read SLURM_CONF
    yield env
    services.cancel_jobs(env)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _cancel_jobs_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A job a test submitted (one that failed, or one PENDING forever) never outlives the test."""
    yield
    if "slurm" in request.fixturenames:
        services.cancel_jobs(request.getfixturevalue("slurm"))


@pytest.fixture(scope="session")
def postgres_url(services_dir: Path) -> str:
    """A SQLAlchemy URL (postgresql+psycopg2://) of the `optbench` database on a fresh PostgreSQL server."""
    return services.start_postgres(services_dir)


@pytest.fixture
def fresh_database(postgres_url: str, request: pytest.FixtureRequest) -> str:
    """A database of its own for this test on the session's server (empty: no tables yet)."""
    name = re.sub(r"\W+", "_", request.node.name).lower()[:50]
    return services.create_database(postgres_url, name)


@pytest.fixture(scope="session")
def mlflow_server(services_dir: Path, postgres_url: str) -> str:
    """The tracking URI (http://127.0.0.1:PORT) of an MLflow server on PostgreSQL, artifacts in the session dir."""
    return services.start_mlflow_server(services_dir, services.create_database(postgres_url, "mlflow"))
