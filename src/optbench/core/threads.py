"""CPU threads for processes that share one machine: tuning workers (tune.n_jobs) and the like.

torch gives every process as many intra-op threads as the machine has cores, so n workers on c cores run
n x c threads and spend their time preempting each other. Each worker takes its share instead.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("optbench.core.threads")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which SLURM and taskset restrict), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Threads for each of `workers` processes so that workers x threads <= cores (at least 1 each)."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, workers))


def share_cores(workers: int, who: str) -> int:
    """Set this process's torch threads to its share of the cores among `workers`, say so, return the count.

    An explicit OMP_NUM_THREADS wins: whoever set it has decided already."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        threads = torch.get_num_threads()
        log.info("%s: %d torch threads (OMP_NUM_THREADS is set)", who, threads)
        return threads
    cores = available_cores()
    threads = threads_per_worker(workers, cores)
    torch.set_num_threads(threads)
    log.info("%s: %d torch threads (%d cores shared by %d workers)", who, threads, cores, workers)
    return threads
