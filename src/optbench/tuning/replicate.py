"""Replicated tuning (AlgoPerf's external tuning ruleset): `tune.n_studies` independent studies of
`tune.n_trials` trials each, and the settings of the study whose best value is the median of the studies'
bests. One lucky (or unlucky) study then cannot decide a comparison, and the spread of the studies' bests
shows how much of a difference between optimizers tuning noise alone could make.

Study i differs from study 0 only in its seeds: the sampler's (tune.sampler.seed + i) and the training
seed of its trials (tune.seed + i, kept apart from evaluation seeds). Study 0 keeps the plain study name,
so a single-study storage stays resumable when replicas are added; study i > 0 is `<name>-s<i>`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from omegaconf import DictConfig, open_dict
from scipy import stats

from optbench.core.errors import ConfigError

SELECTION = "median_of_study_bests"


def replica_name(name: str, index: int) -> str:
    return name if index == 0 else f"{name}-s{index}"


def trial_seed(cfg: DictConfig, index: int) -> int:
    """The training seed of every trial of study `index`."""
    return int(cfg.tune.seed) + index


def check_replication(cfg: DictConfig) -> None:
    t = cfg.tune
    if not isinstance(t.n_studies, int) or isinstance(t.n_studies, bool) or t.n_studies < 1:
        raise ConfigError(f"tune.n_studies must be an integer of at least 1, got {t.n_studies!r}.")
    if not isinstance(t.seed, int) or isinstance(t.seed, bool) or t.seed < 0:
        raise ConfigError(
            f"tune.seed must be a non-negative integer (the training seed of the trials), got {t.seed!r}."
        )


def replica_config(cfg: DictConfig, name: str, index: int) -> DictConfig:
    """The config of study `index`: its own name, sampler seed and trial seed."""
    replica = cfg.copy()
    with open_dict(replica):
        replica.tune.study_name = replica_name(name, index)
        replica.tune.sampler.seed = int(cfg.tune.sampler.seed) + index
        replica.seed = trial_seed(cfg, index)
    return replica


def median_study(bests: list[float | None], direction: str) -> int:
    """Index of the study whose best value is the median of the studies' bests.

    Studies are ranked best first (a study without a completed trial last) and the one at rank n // 2 is
    chosen: the median for an odd number of studies, the worse of the middle two for an even number
    (the conservative choice: a comparison never rests on the luckier half)."""
    sign = -1.0 if direction == "maximize" else 1.0
    order = sorted(range(len(bests)), key=lambda i: (bests[i] is None, sign * (bests[i] or 0.0), i))
    return order[len(order) // 2]


def spread(bests: list[float | None]) -> dict[str, Any]:
    """Median, min, max and interquartile range of the studies' best values (those that have one)."""
    values = np.array([b for b in bests if b is not None], dtype=float)
    if values.size == 0:
        return {"median": None, "min": None, "max": None, "iqr": None, "n_with_best": 0}
    return {
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
        "iqr": float(stats.iqr(values)),
        "n_with_best": int(values.size),
    }


def combine(name: str, cfg: DictConfig, per_study: list[dict[str, Any]]) -> dict[str, Any]:
    """best.json of a replicated tuning: the median study's settings, every study's best and the spread."""
    bests = [s["best_value"] for s in per_study]
    chosen = per_study[median_study(bests, cfg.tune.direction)]
    outcomes: Counter[str] = Counter()
    for s in per_study:
        outcomes.update(s["n_trials"])
    keep = ("study_name", "study_index", "sampler_seed", "seed", "best_value", "best_params", "best_trial")
    return {
        "study_name": name,
        "optimizer": cfg.optimizer.name,
        "metric": cfg.tune.metric,
        "direction": cfg.tune.direction,
        "selection": SELECTION,
        "best_value": chosen["best_value"],
        "best_params": chosen["best_params"],
        "best_trial": chosen["best_trial"],
        "best_study": chosen["study_index"],
        "searched": chosen["searched"],
        "space": chosen["space"],
        "overrides": chosen["overrides"],
        "n_trials": dict(outcomes),
        "n_finished": sum(s["n_finished"] for s in per_study),
        "budget": sum(s["budget"] for s in per_study),
        "n_studies": len(per_study),
        "trials_per_study": cfg.tune.n_trials,
        "studies": {
            **spread(bests),
            "per_study": [{k: s[k] for k in keep} | {"n_trials": s["n_trials"]} for s in per_study],
        },
    }
