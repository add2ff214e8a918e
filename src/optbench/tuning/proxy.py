"""optbench-tune-proxy: Optuna's gRPC storage proxy in front of a database, for many tuning workers.

    optbench-tune-proxy --storage postgresql+psycopg2://optuna@dbhost/optuna --host 0.0.0.0 --port 13000
    optbench-tune ... tune.launcher=slurm tune.n_jobs=64 tune.storage=grpc://loginhost:13000

Hundreds of workers each holding database connections overload a PostgreSQL server; the proxy holds one
storage (and Optuna's cache) and the workers speak gRPC to it. This is Optuna's own server
(`optuna.storages.run_grpc_proxy_server`); optbench only creates the database's tables first and reports a bad
storage as one paragraph. It serves until stopped (Ctrl-C or SIGTERM). It cannot sit in front of a journal
file (Optuna does not support that), and a second proxy on a port already in use starts without an error
and shares the traffic: give each proxy its own port.
"""

from __future__ import annotations

import argparse
import logging
import sys

from optbench.core.errors import user_errors

log = logging.getLogger("optbench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="optbench-tune-proxy",
        description="Serve an Optuna database storage to tuning workers over gRPC (tune.storage=grpc://host:port).",
    )
    parser.add_argument("--storage", required=True, help="database URL, e.g. postgresql+psycopg2://user@host/db")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=13000, help="port to listen on (Optuna's default 13000)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    with user_errors():
        import warnings

        import optuna

        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the proxy and heartbeats: known

        from optbench.core.errors import ConfigError
        from optbench.tuning.storage import GRPC, JOURNAL, open_storage, shown

        if args.storage.startswith((JOURNAL, GRPC)):
            raise ConfigError(
                f"--storage {args.storage}: the gRPC proxy serves a database (sqlite:///..., "
                "postgresql+psycopg2://...), not a journal file or another proxy."
            )
        storage = open_storage(args.storage)  # creates the tables once, before any worker connects
        log.info("Optuna gRPC storage proxy for %s on %s:%d", shown(args.storage), args.host, args.port)
        try:
            optuna.storages.run_grpc_proxy_server(storage, host=args.host, port=args.port)
        except KeyboardInterrupt:
            log.info("gRPC storage proxy stopped")


if __name__ == "__main__":
    sys.exit(main())
