"""The MLflow store: where it is, opening it safely from many processes, and runs whose process died.

- Where: MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db`. A relative SQLite path is taken from the
  repository DVC runs the stage for ($DVC_ROOT), so queued and temporary `dvc exp run`s, which run in a
  copy of the repository, log to the workspace's store; outside DVC, from the working directory.
- Safely: the first process to open a SQLite store creates its schema under a file lock; the others
  wait and then find it made (several processes creating one at once corrupt it).
- Reachable: a tracking server or database that does not answer fails in seconds with one paragraph,
  instead of MLflow's minutes of retries and a traceback.
- Dead runs: every run records the process that owns it (host, PID, process start time). Opening the
  store marks RUNNING runs of this host whose process no longer exists KILLED (kill -9, OOM).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from filelock import FileLock
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from optbench.core.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SQLITE = "sqlite:///"
OWNER_TAG = "optbench.process"  # host:pid:start of the process that owns a RUNNING run
OUTCOME_TAG = "optbench.outcome"
# MLflow's HTTP client retries 7 times with exponential backoff (minutes); a few short tries are enough
# to ride out a busy server. Set these variables yourself to override.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_opened: set[str] = set()  # stores this process has already checked


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI with a relative SQLite path made absolute against $DVC_ROOT or the working directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        base = Path(os.environ.get("DVC_ROOT") or Path.cwd())
        return SQLITE + str((base / uri[len(SQLITE) :]).resolve())
    return uri


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None


def open_store(uri: str | None = None, *, create: bool = True) -> MlflowClient:
    """A client for the store, checked once per process: created safely (SQLite), reachable (servers and
    databases), and with the dead runs of this host marked KILLED. `create=False`: a missing SQLite
    file is an error, not a new empty store."""
    uri = resolve_tracking_uri(uri)
    if uri in _opened:
        return MlflowClient(uri)
    path = sqlite_path(uri)
    if path is not None:  # checked before the client exists: MLflow creates the file and its folders
        if not path.is_file() and not create:
            raise ConfigError(f"no MLflow store at {path} (tracking_uri={uri}): train runs first.")
        if not path.parent.is_dir():
            raise ConfigError(f"MLflow store {uri}: the folder {path.parent} does not exist.")
        with FileLock(str(path) + ".lock", timeout=120):
            client = MlflowClient(uri)
            _check(client, uri)
    else:
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        if uri.startswith(("http://", "https://")):
            _check_server(uri)
        client = MlflowClient(uri)
        _check(client, uri)
    _opened.add(uri)
    reap_dead_runs(client)
    return client


def _check(client: MlflowClient, uri: str) -> None:
    try:
        client.search_experiments(max_results=1)  # creates or migrates a SQLite schema; reaches a database
    except Exception as err:  # MLflow, SQLAlchemy and driver errors alike
        first = " ".join(str(err).split())[:400]
        raise ConfigError(
            f"cannot use the MLflow store at {uri}: {first}. Check MLFLOW_TRACKING_URI (or logger.tracking_uri), "
            "that the database or server is running and reachable, and that its driver is installed."
        ) from None


def _check_server(uri: str, timeout: float = 5.0) -> None:
    import requests  # MLflow's own HTTP dependency

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as err:
        raise ConfigError(
            f"cannot reach the MLflow tracking server at {uri} ({type(err).__name__}). Start it (mlflow server "
            "--host ... --port ...), check MLFLOW_TRACKING_URI, or unset it to log to sqlite:///mlflow.db."
        ) from None


# --- processes that own runs -----------------------------------------------------------------------------


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc), or "" where there is no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_tag() -> dict[str, str]:
    """The tag naming this process as a run's owner."""
    pid = os.getpid()
    return {OWNER_TAG: f"{socket.gethostname()}:{pid}:{_start_time(pid)}"}


def owner_alive(owner: str) -> bool | None:
    """Whether the process named by an owner tag still runs; None when it ran on another host."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    return not start or _start_time(pid) in ("", start)  # a reused PID is another process


def reap_dead_runs(client: MlflowClient) -> list[str]:
    """Mark KILLED (outcome killed) every RUNNING run of this host whose owning process is gone."""
    host = socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(
        experiments, f"attributes.status = 'RUNNING' AND tags.`{OWNER_TAG}` LIKE '{host}:%'", max_results=1000
    )
    dead = [run.info.run_id for run in running if owner_alive(run.data.tags.get(OWNER_TAG, "")) is False]
    for run_id in dead:
        client.log_batch(run_id, tags=[RunTag(OUTCOME_TAG, "killed")])
        client.set_terminated(run_id, "KILLED")
    return dead
