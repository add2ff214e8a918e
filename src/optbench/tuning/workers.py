"""Where a study's trials run: in this process, in `tune.n_jobs` local processes, or in `tune.n_jobs` SLURM jobs.

    tune.launcher=local tune.n_jobs=1     this process (the default)
    tune.launcher=local tune.n_jobs=4     4 spawned processes on this machine, sharing its cores
    tune.launcher=slurm tune.n_jobs=16    one SLURM array job of 16 tasks (submitit), settings in tune.slurm

Every worker runs the same loop (tune._optimize): ask the shared storage for trials until the study holds
`tune.n_trials` finished ones. The storage hands out trial numbers atomically and tune.is_surplus turns a
trial started after the budget was taken into an uncounted FAIL, so the study ends with exactly n_trials
however many workers race. The study and the database tables exist before any worker starts (tune.py).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from optbench.cluster.workers import check_slurm, run_array
from optbench.core.errors import ConfigError, OptbenchError
from optbench.core.logs import quiet_known_warnings
from optbench.core.threads import share_cores
from optbench.tuning.storage import is_sqlite, shown

LAUNCHERS = ("local", "slurm")
Optimize = Callable[[dict, str, str, str], None]  # tune._optimize(resolved config, study, parent run, out)


def check_launcher(cfg: DictConfig) -> None:
    """tune.launcher and its storage fit together; checked before anything is opened, submitted or logged."""
    launcher = cfg.tune.get("launcher", "local")
    if launcher not in LAUNCHERS:
        raise ConfigError(f"tune.launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}.")
    if launcher != "slurm":
        return
    if is_sqlite(cfg.tune.storage) and not cfg.tune.slurm.get("single_node", False):
        raise ConfigError(
            f"tune.storage={shown(cfg.tune.storage)} with tune.launcher=slurm: SLURM jobs run on several nodes and "
            "a SQLite file on a network file system locks badly (workers fail with `database is locked` or corrupt "
            "it). Use tune.storage=journal:///shared/path/optuna.log (a shared file system), "
            "postgresql+psycopg2://user@host/db or grpc://host:port (optbench-tune-proxy); or, if every job "
            "runs on the node that holds the file, set tune.slurm.single_node=true."
        )
    check_slurm("tune.launcher=slurm")


def run_workers(optimize: Optimize, resolved: dict, name: str, parent_id: str, out: str) -> None:
    """Run study `name`'s remaining trials with the launcher and number of workers of `resolved['tune']`."""
    tune = resolved["tune"]
    if tune.get("launcher", "local") == "slurm":
        _on_slurm(optimize, resolved, name, parent_id, out)
    elif tune["n_jobs"] == 1:
        optimize(resolved, name, parent_id, out)
    else:
        _in_processes(optimize, resolved, name, parent_id, out, tune["n_jobs"])


def worker(optimize: Optimize, resolved: dict, name: str, parent_id: str, out: str, index: int, sharing: int) -> None:
    """One worker process: optbench's log format, its share of the cores among `sharing` workers, the loop."""
    quiet_known_warnings()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    share_cores(sharing, f"tuning worker {index}")  # local: n_jobs x threads <= cores
    optimize(resolved, name, parent_id, out)


def _in_processes(optimize: Optimize, resolved: dict, name: str, parent_id: str, out: str, n_jobs: int) -> None:
    # Processes, not threads: each trial seeds torch's global RNG and runs its own Trainer.
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=worker, args=(optimize, resolved, name, parent_id, out, i, n_jobs))
        for i in range(n_jobs)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    failed = [w.exitcode for w in workers if w.exitcode != 0]
    if failed:
        raise OptbenchError(f"{len(failed)} of {n_jobs} tuning workers exited with an error (exit codes {failed}).")


def _on_slurm(optimize: Optimize, resolved: dict, name: str, parent_id: str, out: str) -> None:
    """`tune.n_jobs` tasks of one SLURM array job; each owns its allocation's cores (sharing=1)."""
    tune = resolved["tune"]
    slurm: dict[str, Any] = OmegaConf.to_container(OmegaConf.create(tune["slurm"]))  # type: ignore[assignment]
    args = [(optimize, resolved, name, parent_id, out, i, 1) for i in range(tune["n_jobs"])]
    logging.getLogger("optbench").info("Study %s: %d tuning workers on SLURM", name, tune["n_jobs"])
    run_array(worker, args, folder=slurm.get("folder") or _log_folder(), name=f"tune-{name}", settings=slurm)


def _log_folder() -> str:
    """<the command's Hydra output folder>/slurm, next to its own log; ./slurm when composed from Python."""
    from hydra.core.hydra_config import HydraConfig

    output_dir = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
    return str(Path(output_dir or ".") / "slurm")
