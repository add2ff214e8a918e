"""tune(cfg): Optuna studies per optimizer, with an equal budget, pruning, resume and parallel workers.

    optbench-tune optimizer=adam tune=full tune.n_trials=20 tune.n_studies=3
    optbench-tune -m optimizer=sgd,momentum,adam,adamw tune.n_trials=20

`tune.n_studies` independent studies (replicate.py) of `tune.n_trials` trials each, over the search space
of spaces.py. Each trial is an optbench-train run (same config, a few sampled values, the tuning seed) and
an MLflow child run of its study's parent run. Studies live in persistent Optuna storage: rerunning the
command continues each up to `tune.n_trials` finished trials, and several processes may share one:
local processes or SLURM jobs (workers.py), on SQLite, a journal file, PostgreSQL or a gRPC proxy (storage.py).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import FrozenTrial, TrialState

from optbench.core import timings
from optbench.core.errors import ConfigError
from optbench.core.files import write_json
from optbench.core.logs import quiet_routine_logs
from optbench.tracking import (
    TAG_PREFIX,
    ends_run,
    experiment_id,
    log_values,
    open_store,
    provenance_tags,
    run_params,
)
from optbench.training.checks import apply_best, validate
from optbench.training.data import load_dataset
from optbench.training.train import train
from optbench.tuning.plots import plot_sensitivity, save_optimization_history
from optbench.tuning.progress import FINISHED_STATES, TrialProgress, finished, rounded
from optbench.tuning.replicate import check_replication, combine, replica_config
from optbench.tuning.spaces import SearchParam, describe, parse_search_space, settings_of, space_record
from optbench.tuning.storage import open_storage, shown
from optbench.tuning.workers import check_launcher, run_workers

log = logging.getLogger("optbench")


def study_name(cfg: DictConfig) -> str:
    # Optimizer first, as in training run names (adam-mlp-digits-s0): runs tables sort and cut names alike.
    return cfg.tune.study_name or f"{cfg.optimizer.name}-{cfg.model.name}-{cfg.data.name}-{cfg.tune.name}"


def _storage(cfg: DictConfig) -> optuna.storages.BaseStorage:
    return open_storage(cfg.tune.storage, cfg.tune.heartbeat.interval, cfg.tune.heartbeat.grace_period)


def build_sampler(cfg: DictConfig) -> optuna.samplers.BaseSampler:
    name, seed = cfg.tune.sampler.name, cfg.tune.sampler.seed
    if name == "sobol":
        # Scrambled Sobol points cover the range evenly whatever the budget; seeded for reproducibility.
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"Unknown tune.sampler.name '{name}'. Valid samplers: sobol, tpe, random.")


def build_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    p = cfg.tune.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
    if p.name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"Unknown tune.pruner.name '{p.name}'. Valid pruners: median, successive_halving, none.")


def check_tune_config(cfg: DictConfig) -> list[SearchParam]:
    """Every check that can run before the storage is touched; returns the search space."""
    t = cfg.tune
    if not isinstance(t.n_trials, int) or t.n_trials < 1:
        raise ConfigError(f"tune.n_trials must be an integer of at least 1, got {t.n_trials!r}.")
    if not isinstance(t.n_jobs, int) or t.n_jobs < 1:
        raise ConfigError(f"tune.n_jobs must be an integer of at least 1, got {t.n_jobs!r}.")
    if t.direction not in ("maximize", "minimize"):
        raise ConfigError(f"tune.direction must be maximize or minimize, got {t.direction!r}.")
    check_replication(cfg)
    check_launcher(cfg)
    if cfg.strategy.name == "ddp":
        raise ConfigError(
            "strategy=ddp cannot run inside a tuning loop: Lightning starts the other ranks by re-running the "
            "command line, and each would run its own study. Use strategy=ddp_spawn."
        )
    space = parse_search_space(cfg)
    build_sampler(cfg), build_pruner(cfg)
    checked = apply_best(cfg)
    if t.get("launcher") == "slurm" and cfg.trainer.accelerator in ("gpu", "cuda"):
        # Submitted from a login node, which has no GPU: the GPUs are the jobs', checked where the trials run.
        checked = checked.copy()
        with open_dict(checked):
            checked.trainer.accelerator = "cpu"
    validate(checked)
    return space


def tune(cfg: DictConfig) -> dict[str, Any]:
    """Run (or continue) `tune.n_studies` studies of `tune.n_trials` finished trials each; write and return
    best.json: the settings of the median study, and every study's best."""
    timings.begin()
    space = check_tune_config(cfg)
    name = study_name(cfg)
    log.info(
        "Tuning %s: %d studies x %d trials, trial seeds %d.., search space:\n%s",
        name,
        cfg.tune.n_studies,
        cfg.tune.n_trials,
        cfg.tune.seed,
        describe(space),
    )
    storage = _storage(cfg)
    client = open_store(cfg.logger.get("tracking_uri"))  # created once, before any worker starts
    exp_id = experiment_id(client, cfg.experiment)
    out = Path(cfg.tune.output_dir) / name
    fingerprint = load_dataset(cfg.data).fingerprint  # the split every trial trains on; tags each study's run
    studies = [
        _tune_study(replica_config(cfg, name, i), name, i, storage, client, exp_id, space, fingerprint, out / f"s{i}")
        for i in range(cfg.tune.n_studies)
    ]
    summary = {**combine(name, cfg, [s for s, _ in studies]), "output_dir": str(out)}
    write_json(out / "best.json", summary)
    by_study = {f"study {i}": trials for i, (_, trials) in enumerate(studies)}
    for param in space:
        if param.key in ("optimizer.lr", "batch_size"):
            path = out / f"sensitivity_{param.key.replace('.', '_')}.png"
            plot_sensitivity(by_study, param.key, cfg.tune.metric, path)
    for study_summary, _ in studies:
        parent_id = study_summary["mlflow_run_id"]
        client.set_tag(parent_id, TAG_PREFIX + "selected", str(study_summary["study_index"] == summary["best_study"]))
        client.log_artifact(parent_id, str(out / "best.json"), artifact_path="all_studies")
    log.info(
        "%s: median study %s of %d, best %s = %s (studies' bests from %s to %s)",
        name,
        summary["best_study"],
        summary["n_studies"],
        cfg.tune.metric,
        rounded(summary["best_value"]),
        rounded(summary["studies"]["min"]),
        rounded(summary["studies"]["max"]),
    )
    return summary


def _tune_study(
    cfg: DictConfig,
    base: str,
    index: int,
    storage: optuna.storages.BaseStorage,
    client: MlflowClient,
    exp_id: str,
    space: list[SearchParam],
    fingerprint: str,
    out: Path,
) -> tuple[dict[str, Any], list[FrozenTrial]]:
    """Run (or continue) one study until it has `tune.n_trials` finished trials; its summary and trials."""
    name = cfg.tune.study_name
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=build_sampler(cfg),
        pruner=build_pruner(cfg),
        direction=cfg.tune.direction,
        load_if_exists=True,
    )
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)  # trials left RUNNING by killed processes
    with timings.phase("tracking"):
        parent_id = _parent_run(client, exp_id, study, cfg, index, base, space, fingerprint)
    done = finished(study)
    log.info(
        "Study %s (%d of %d, sampler seed %d, trial seed %d): %d of %d trials finished, storage %s",
        name,
        index + 1,
        cfg.tune.n_studies,
        cfg.tune.sampler.seed,
        cfg.seed,
        done,
        cfg.tune.n_trials,
        shown(cfg.tune.storage),
    )
    with ends_run(client, parent_id):
        if done < cfg.tune.n_trials:
            resolved = OmegaConf.to_container(cfg, resolve=True)
            run_workers(_optimize, resolved, name, parent_id, str(out))  # here, local processes or SLURM jobs
        study = optuna.load_study(study_name=name, storage=storage)
        summary = summarize(study, cfg, space, out, index)
        summary["mlflow_run_id"] = parent_id
        with timings.phase("tracking"):
            _log_to_parent_run(client, parent_id, summary, out)
    return summary, counted_trials(study)


def _parent_run(
    client: MlflowClient,
    exp_id: str,
    study: optuna.Study,
    cfg: DictConfig,
    index: int,
    base: str,
    space: list[SearchParam],
    fingerprint: str,
) -> str:
    """The study's MLflow run: created with the study, reopened (RUNNING again) when the study resumes."""
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id is not None:
        try:
            client.update_run(run_id, status="RUNNING")
            return run_id
        except Exception:  # the MLflow store changed since: start a new parent run
            log.warning("The study's MLflow run %s is gone; logging this session to a new one.", run_id)
    run = client.create_run(
        exp_id,
        run_name=study.study_name,
        tags={
            **provenance_tags(),
            TAG_PREFIX + "kind": "study",
            TAG_PREFIX + "study": study.study_name,
            TAG_PREFIX + "study_index": str(index),
            TAG_PREFIX + "tuning": base,  # the replicated tuning this study belongs to
            TAG_PREFIX + "optimizer": cfg.optimizer.name,
            TAG_PREFIX + "data_fingerprint": fingerprint,
        },
    )
    # The searched settings' config values are untuned defaults: the run logs their ranges (search.<key>)
    # and, when the study ends, the values found (best/<key>), never the defaults.
    searched = {p.key for p in space} | {p.key.rsplit(".", 1)[0] for p in space if p.key.rsplit(".", 1)[-1].isdigit()}
    params = {k: v for k, v in run_params(cfg).items() if not k.startswith("tune.search_space") and k not in searched}
    params["tune.storage"] = shown(cfg.tune.storage)  # never a database password in MLflow
    params |= {f"search.{key}": line.strip() for key, line in zip((p.key for p in space), describe(space).splitlines())}
    log_values(client, run.info.run_id, params=params)
    study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
    return run.info.run_id


def _optimize(resolved: dict, name: str, parent_id: str, out: str) -> None:
    """Run trials of study `name` in this process until the study holds n_trials finished trials."""
    cfg = OmegaConf.create(resolved)
    space = parse_search_space(cfg)
    study = optuna.load_study(
        study_name=name, storage=_storage(cfg), sampler=build_sampler(cfg), pruner=build_pruner(cfg)
    )
    remaining = cfg.tune.n_trials - finished(study)
    if remaining <= 0:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial from TrialProgress instead
    quiet_routine_logs()
    label = f"{name} (study {cfg.seed - cfg.tune.seed + 1}/{cfg.tune.n_studies})"  # replica_config's trial seed
    with TrialProgress(label, cfg.tune.n_trials, cfg.tune.n_trials - remaining) as progress:
        study.optimize(
            lambda trial: objective(trial, cfg, space, parent_id, Path(out)),
            n_trials=remaining,
            callbacks=[optuna.study.MaxTrialsCallback(cfg.tune.n_trials, states=FINISHED_STATES), progress],
            catch=(RuntimeError, ValueError, SurplusTrial),  # a crashed trial is recorded as FAIL; the study goes on
        )


class SurplusTrial(Exception):
    """A trial started after the budget was already taken by other workers' trials (recorded FAIL, not counted)."""


def is_surplus(trial: optuna.Trial, n_trials: int) -> bool:
    """Whether `n_trials` trials that count (finished, or running and not surplus) have smaller numbers.

    Several workers ask for trials at once, and Optuna's MaxTrialsCallback only stops a worker after its
    trial: without this the study overshoots its budget. A trial number is handed out atomically by the
    storage, so the first `n_trials` trials that do not fail take the budget, whatever the workers do."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    earlier = [
        t
        for t in trial.study.get_trials(deepcopy=False, states=live)
        if t.number < trial.number and t.user_attrs.get("outcome") != "surplus"
    ]
    return len(earlier) >= n_trials


def objective(trial: optuna.Trial, cfg: DictConfig, space: list[SearchParam], parent_id: str, out: Path) -> float:
    """Train once with sampled settings and the study's trial seed (`cfg.seed`, set by replica_config);
    the trial's value is `tune.metric` of that run."""
    from optuna_integration import PyTorchLightningPruningCallback

    if is_surplus(trial, cfg.tune.n_trials):
        trial.set_user_attr("outcome", "surplus")
        trial.study.stop()
        raise SurplusTrial(f"trial {trial.number}: the budget of {cfg.tune.n_trials} trials is taken")
    trial_cfg = cfg.copy()
    for param in space:
        OmegaConf.update(trial_cfg, param.key, param.suggest(trial), merge=False)
    trial_cfg.metrics_path = str(out / "trials" / f"{trial.number}.json")
    callbacks = []
    if cfg.tune.pruner.name != "none":
        callbacks.append(PyTorchLightningPruningCallback(trial, monitor=cfg.tune.prune_on))
    tags = {
        "mlflow.parentRunId": parent_id,
        "mlflow.runName": f"trial{trial.number}-{trial.study.study_name}",  # the distinguishing part first
        TAG_PREFIX + "study": trial.study.study_name,
        TAG_PREFIX + "trial": str(trial.number),
        TAG_PREFIX + "study_index": str(cfg.seed - cfg.tune.seed),  # replica_config: seed = tune.seed + index
    }
    trial.set_user_attr("outcome", "running")
    try:
        metrics = train(trial_cfg, callbacks=callbacks, tags=tags)
    except optuna.TrialPruned:
        trial.set_user_attr("outcome", "pruned")
        raise
    except Exception:
        trial.set_user_attr("outcome", "failed")
        raise
    trial.set_user_attr("mlflow_run_id", metrics.get("run_id"))
    value = metrics.get(cfg.tune.metric)
    diverged = metrics.get("train/diverged", 0.0) > 0
    trial.set_user_attr("outcome", "diverged" if diverged else "completed")
    if value is None or not math.isfinite(value):
        # A diverged run may have no finite value: give it the worst one, so the study learns to avoid it.
        return -math.inf if cfg.tune.direction == "maximize" else math.inf
    return float(value)


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials without the surplus ones (started after the budget was taken)."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("outcome") != "surplus"]


def summarize(study: optuna.Study, cfg: DictConfig, space: list[SearchParam], out: Path, index: int) -> dict:
    """Write the study's own best.json and plots to `out`; return what its best.json holds (best_params:
    config values, so it also feeds optbench-train best=...)."""
    trials = counted_trials(study)
    outcomes: dict[str, int] = {}
    for t in trials:
        outcome = t.user_attrs.get("outcome", t.state.name.lower())
        outcome = "failed" if t.state == TrialState.FAIL else outcome
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    completed = [t for t in trials if t.state == TrialState.COMPLETE and math.isfinite(t.value)]
    out.mkdir(parents=True, exist_ok=True)
    best = study.best_trial if completed else None
    settings = settings_of(best.params, space) if best else {}
    summary = {
        "study_name": study.study_name,
        "study_index": index,
        "sampler_seed": cfg.tune.sampler.seed,
        "seed": cfg.seed,
        "optimizer": cfg.optimizer.name,
        "metric": cfg.tune.metric,
        "direction": cfg.tune.direction,
        "best_value": best.value if best else None,
        "best_params": settings,
        "searched": [param.key for param in space],
        "space": space_record(space),
        "best_trial": best.number if best else None,
        "overrides": [f"{k}={v}" for k, v in settings.items()],
        "n_trials": outcomes,
        "n_finished": finished(study),
        "budget": cfg.tune.n_trials,
        "output_dir": str(out),
    }
    if best is None:
        log.warning(
            "Study %s has no completed trial with a finite value: best.json has no best settings.", study.study_name
        )
    write_json(out / "best.json", summary)
    save_optimization_history(study, out / "optimization_history.png")
    for param in space:
        if param.key in ("optimizer.lr", "batch_size"):
            path = out / f"sensitivity_{param.key.replace('.', '_')}.png"
            plot_sensitivity({"trials": trials}, param.key, cfg.tune.metric, path)
    return summary


def _log_to_parent_run(client: MlflowClient, run_id: str, summary: dict, out: Path) -> None:
    step = summary["n_finished"]
    metrics = [Metric("tune/n_finished", step, 0, step)]
    if summary["best_value"] is not None:
        metrics.append(Metric("best/value", summary["best_value"], 0, step))
        metrics += [Metric(f"best/{k}", float(v), 0, step) for k, v in summary["best_params"].items()]
    client.log_batch(run_id, metrics=metrics)
    for outcome, count in summary["n_trials"].items():
        client.log_metric(run_id, f"tune/n_{outcome}", count, step=step)
    for path in sorted(out.glob("*.png")) + [out / "best.json"]:
        client.log_artifact(run_id, str(path))
