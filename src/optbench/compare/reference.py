"""make_target(cfg): the reference procedure behind a targets file (optbench-target, conf/target.yaml).

Each reference optimizer trains on every reference seed with its tuned settings (a best.json of
optbench-tune, or the config defaults) through the same train(cfg) as optbench-train. The target is the
median over seeds of val/acc_best of the best reference optimizer (the highest such median), written with
its provenance to conf/targets/<data>-<model>.yaml. The reference seeds are disjoint from the evaluation
seeds, and the reference runs carry optbench.kind=target_reference, so they are never compared themselves.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import optbench
from optbench.compare.runs import KIND_TAG, as_list, option_name
from optbench.compare.targets import DIRECTION, METRIC, write_target_file
from optbench.core.config import compose_config
from optbench.core.errors import ConfigError
from optbench.tracking import TAG_PREFIX, git_state

log = logging.getLogger("optbench.target")
BEST_METRIC = "val/acc_best"  # the per-run value whose median is the target


@contextmanager
def composing_beside_the_app() -> Iterator[None]:
    """compose_config initializes Hydra itself, which Hydra refuses while optbench-target's @hydra.main holds
    it: set the running app's Hydra aside for the block (the composed train config is the HydraConfig that
    train() logs), then put it back."""
    global_hydra, hydra_config = GlobalHydra.instance(), HydraConfig.instance()
    saved = global_hydra.hydra, hydra_config.cfg
    global_hydra.clear()
    try:
        yield
    finally:
        global_hydra.hydra, hydra_config.cfg = saved


def check_target_config(cfg: DictConfig) -> tuple[list[str], list[int], dict[str, str | None]]:
    """The reference optimizers, seeds and best.json per optimizer, checked before anything trains."""
    optimizers = [str(o) for o in as_list(cfg.reference_optimizers) or []]
    seeds = as_list(cfg.seeds) or []
    if not optimizers:
        raise ConfigError("reference_optimizers is empty: name at least one optimizer (default [adamw, momentum]).")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"seeds must be a non-empty list of non-negative integers, got {seeds!r}.")
    if len(set(seeds)) != len(seeds) or len(set(optimizers)) != len(optimizers):
        raise ConfigError("seeds and reference_optimizers must not repeat an entry.")
    shared = sorted(set(seeds) & set(as_list(cfg.evaluation_seeds) or []))
    if shared:
        raise ConfigError(
            f"seeds {shared} are also evaluation seeds (evaluation_seeds): a target set on the same seeds as the "
            "compared runs is not independent of them. Use seeds outside evaluation_seeds (default 100-109)."
        )
    if cfg.epochs is not None and not (isinstance(cfg.epochs, int) and cfg.epochs >= 1):
        raise ConfigError(f"epochs must be a positive integer or null, got {cfg.epochs!r}.")
    best = OmegaConf.to_container(cfg.best) if isinstance(cfg.best, DictConfig) else cfg.best
    if best is not None and not isinstance(best, dict):
        raise ConfigError(f"best must map optimizers to best.json files ({{adamw: path}}) or be null, got {best!r}.")
    best = {str(k): (None if v is None else str(v)) for k, v in (best or {}).items()}
    unknown = sorted(set(best) - set(optimizers))
    if unknown:
        raise ConfigError(f"best names {', '.join(unknown)}, which are not reference_optimizers ({optimizers}).")
    for name, path in best.items():
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"best.{name}={path}: no such file. Tune first (optbench-tune) or set best.{name}=null.")
    if len(seeds) < 10:
        log.warning("%d reference seeds: the protocol asks for at least 10 (fine for a test).", len(seeds))
    return optimizers, seeds, {name: best.get(name) for name in optimizers}


def trainer_choice() -> str | None:
    """The conf/trainer option the running app (or compose_config) selected, e.g. "fast"."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("trainer")


def train_overrides(cfg: DictConfig, optimizer: str, seed: int, best: str | None, trainer: str | None) -> list[str]:
    """The optbench-train overrides of one reference run (cfg.train_overrides last, so they win)."""
    extra = [str(o) for o in as_list(cfg.train_overrides) or []]
    misplaced = [o for o in extra if o.lstrip("+~").startswith("trainer")]
    if misplaced:
        raise ConfigError(
            f"train_overrides {misplaced}: set the trainer of the reference runs on optbench-target itself "
            "(trainer=fast trainer.limit_train_batches=10 epochs=3), where it is one node for every run."
        )
    data, model = option_name(cfg.data), option_name(cfg.model)
    overrides = [
        f"data={data}",
        f"model={model}",
        f"optimizer={optimizer}",
        f"seed={seed}",
        f"experiment={cfg.experiment}",
        f"metrics_path={Path(cfg.runs_dir) / f'{optimizer}-s{seed}.json'}",
    ]
    if trainer is not None:
        overrides.append(f"trainer={trainer}")
    if best is not None:
        overrides.append(f"best={best}")
    return overrides + extra


def reference_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The train config of one reference run: conf/train.yaml composed with `overrides`, whose trainer node
    is optbench-target's own (with its trainer.* overrides) and runs `epochs` epochs. Call it inside
    composing_beside_the_app()."""
    train_cfg = compose_config(*overrides, config_name="train")
    trainer = cfg.trainer.copy()
    with open_dict(trainer):
        trainer.enable_progress_bar = False
        if cfg.epochs is not None:
            trainer.max_epochs = cfg.epochs
    train_cfg.trainer = trainer
    return train_cfg


def _settings(train_cfg: DictConfig) -> dict[str, Any]:
    """What a reference run trained with besides the seed: the optimizer (tuned values filled in), schedule,
    batch size and epochs."""
    from optbench.training.checks import apply_best, check_values

    applied = apply_best(train_cfg)
    check_values(applied)
    optimizer = OmegaConf.to_container(applied.optimizer, resolve=True)
    return {
        "optimizer": {k: v for k, v in optimizer.items() if not str(k).startswith("_")},
        "scheduler": str(applied.scheduler.name),
        "batch_size": int(applied.batch_size),
        "max_epochs": int(applied.trainer.max_epochs),
    }


def make_target(cfg: DictConfig) -> dict[str, Any]:
    """Train the reference runs, write the targets file to `cfg.output`, and return what it holds."""
    optimizers, seeds, best = check_target_config(cfg)
    data, model = option_name(cfg.data), option_name(cfg.model)
    trainer = trainer_choice()
    plans, settings = {}, {}
    with composing_beside_the_app():  # every config composed and checked before the first run trains
        for optimizer in optimizers:
            for seed in seeds:
                plans[optimizer, seed] = train_overrides(cfg, optimizer, seed, best[optimizer], trainer)
            settings[optimizer] = _settings(reference_config(cfg, plans[optimizer, seeds[0]]))
    from optbench.training.data import load_dataset
    from optbench.training.train import train

    values: dict[str, dict[int, float]] = {name: {} for name in optimizers}
    run_ids: dict[str, dict[int, str | None]] = {name: {} for name in optimizers}
    fingerprint = None
    tags = {KIND_TAG: "target_reference", TAG_PREFIX + "target_file": str(cfg.output)}
    for number, ((optimizer, seed), overrides) in enumerate(plans.items(), start=1):
        log.info("Reference run %d of %d: %s seed %d", number, len(plans), optimizer, seed)
        with composing_beside_the_app():
            train_cfg = reference_config(cfg, overrides)
            fingerprint = fingerprint or load_dataset(train_cfg.data).fingerprint
            metrics = train(train_cfg, tags=tags)
        value = metrics.get(BEST_METRIC, math.nan)
        # A run without a finite best (diverged at once) counts as the metric's floor, never dropped.
        values[optimizer][seed] = float(value) if math.isfinite(value) else 0.0
        run_ids[optimizer][seed] = metrics.get("run_id")  # type: ignore[assignment]
    medians = {name: float(statistics.median(values[name].values())) for name in optimizers}
    chosen = max(optimizers, key=lambda name: medians[name])
    commit, dirty = git_state()
    content = {
        "workload": {"data": data, "model": model},
        "metric": METRIC,
        "direction": DIRECTION,
        "target": round(medians[chosen], 6),
        "reference": {
            "procedure": (
                f"median over seeds of {BEST_METRIC} of the best reference optimizer (highest such median); "
                "first crossing of val/acc counts in optbench-compare"
            ),
            "optimizer": chosen,
            "optimizers": optimizers,
            "seeds": seeds,
            "epochs": settings[chosen]["max_epochs"],
            "trainer": {"option": trainer, **OmegaConf.to_container(cfg.trainer, resolve=True)},
            "train_overrides": [str(o) for o in as_list(cfg.train_overrides) or []],
            "runs": {
                name: {
                    "best_file": best[name],
                    "settings": settings[name],
                    "values": {seed: round(v, 6) for seed, v in values[name].items()},
                    "median": round(medians[name], 6),
                }
                for name in optimizers
            },
        },
        "provenance": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_commit": commit,
            "git_dirty": dirty,
            "optbench_version": optbench.__version__,
            "data_fingerprint": fingerprint,
            "mlflow_experiment": str(cfg.experiment),
            "mlflow_runs": run_ids,
        },
    }
    header = (
        f"Target of optbench-compare for data={data} model={model}, set a priori by optbench-target.\n"
        "Regenerate it with optbench-target rather than editing it: optbench-compare reports its hash."
    )
    path = write_target_file(Path(cfg.output), content, header)
    log.info(
        "Target %s = %.4f (%s, median of %d seeds) written to %s", METRIC, content["target"], chosen, len(seeds), path
    )
    return content
