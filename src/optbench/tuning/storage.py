"""Optuna storage from a `tune.storage` URL: which one for which setting, opened so that workers never race.

    sqlite:///optuna.db                      one machine (a SQLite file locks badly on network file systems)
    journal:///shared/path/optuna.log        a shared file system (Optuna's journal file: appends under a lock)
    postgresql+psycopg2://user@host/db       a database server (many workers, heartbeats for killed trials)
    grpc://host:port                         Optuna's gRPC proxy in front of a database (hundreds of workers;
                                             start it with optbench-tune-proxy, see tuning/proxy.py)

A database's tables are created here, once, by the process that submits the workers: several workers
creating a fresh database's tables at once race (SQLite: `table ... already exists`; PostgreSQL:
`type "studydirection" already exists`). Every failure is one ConfigError paragraph that says what to do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from filelock import FileLock

from optbench.core.errors import ConfigError

SQLITE = "sqlite:///"
JOURNAL = "journal://"
GRPC = "grpc://"
GRPC_READY_TIMEOUT_S = 5.0  # a proxy that is up answers in milliseconds; a missing one should fail fast


def shown(url: str) -> str:
    """`url` with its password masked, for logs, errors and MLflow params (never the password itself)."""
    if "://" not in url or "@" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: keep it as it is
        return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def absolute(url: str) -> str:
    """A SQLite or journal URL with its relative path made absolute against the working directory, so that
    workers started elsewhere (SLURM jobs, spawned processes) open the same file."""
    if url.startswith(SQLITE) and not url.startswith(SQLITE + "/"):
        return SQLITE + str(Path(url[len(SQLITE) :]).resolve())
    if url.startswith(JOURNAL):
        return JOURNAL + str(Path(url[len(JOURNAL) :]).resolve())
    return url


def open_storage(url: str, heartbeat_interval: int = 15, grace_period: int = 60) -> optuna.storages.BaseStorage:
    """Optuna storage for `url`; a database's tables are created here (a SQLite file under a file lock)."""
    url = absolute(url)
    if url.startswith(JOURNAL):
        path = Path(url[len(JOURNAL) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if url.startswith(GRPC):
        return grpc_proxy(url)
    check_driver(url)
    lock = Path(url[len(SQLITE) :] + ".lock") if url.startswith(SQLITE) else None
    try:
        if lock is not None:
            if not lock.parent.is_dir():
                raise ConfigError(f"tune.storage={url}: the folder {lock.parent} does not exist.")
            with FileLock(str(lock)):
                return _rdb_storage(url, heartbeat_interval, grace_period)
        return _rdb_storage(url, heartbeat_interval, grace_period)
    except ConfigError:
        raise
    except Exception as err:  # SQLAlchemy and driver errors: unreachable server, no such database, no permission
        first = " ".join(str(err).split())[:300]
        raise ConfigError(
            f"tune.storage={shown(url)} cannot be opened as Optuna storage: {first}. Check that the database "
            "server is running and reachable and that the database and user exist (PostgreSQL: createdb)."
        ) from None


def check_driver(url: str) -> None:
    """The URL names a database SQLAlchemy knows, and its Python driver is installed (checked before any
    connection, so a missing driver is one line, not SQLAlchemy's traceback from inside a worker)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise ConfigError(
            f"tune.storage={shown(url)} cannot be opened as Optuna storage: not a URL of a database SQLAlchemy "
            "knows. Use sqlite:///optuna.db, journal:///path/optuna.log, postgresql+psycopg2://user@host/db "
            "or grpc://host:port."
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise ConfigError(
            f"tune.storage={shown(url)}: the database driver {dialect.driver!r} is not installed ({err}). "
            "Use postgresql+psycopg2:// (psycopg2-binary installs with optbench) or install the driver "
            f"into this environment (pip install {dialect.driver})."
        ) from None


def _rdb_storage(url: str, heartbeat_interval: int, grace_period: int) -> optuna.storages.RDBStorage:
    """RDBStorage with heartbeats: a trial whose process died (no heartbeat for `grace_period` s) is marked
    FAIL and retried once with the same parameters, so a resumed study covers the points an uninterrupted
    one would (and the retried run continues from the dead one's checkpoint)."""
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
    )


def grpc_address(url: str) -> tuple[str, int]:
    host, _, port = url[len(GRPC) :].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"tune.storage={url}: a gRPC proxy URL is grpc://host:port, for example grpc://login1:13000.")
    return host, int(port)


def grpc_proxy(url: str, timeout: float | None = None) -> optuna.storages.GrpcStorageProxy:
    """A client of Optuna's gRPC storage proxy, after checking within `timeout` seconds that it answers."""
    host, port = grpc_address(url)
    timeout = GRPC_READY_TIMEOUT_S if timeout is None else timeout
    with warnings.catch_warnings():  # "experimental" since Optuna 4.2: known, and nothing the user can act on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=timeout)
    except Exception:  # grpc.FutureTimeoutError: nothing listens there
        proxy.close()
        raise ConfigError(
            f"tune.storage={url}: no Optuna gRPC storage proxy answers at {host}:{port} within {timeout:g} s. "
            f"Start one first (optbench-tune-proxy --storage postgresql+psycopg2://user@dbhost/db --host {host} "
            f"--port {port}) or point tune.storage at the database itself."
        ) from None
    return proxy
