"""Study: one claim study being run. It trains runs in-process through optbench.training.train.train (one
MLflow run each, in the experiment study-<name>, nested under the study's verdict run) and tunes cases
with optbench.tuning.tune.tune where optimizers are compared.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from optbench.core.config import compose_config
from optbench.core.errors import ConfigError, OptbenchError
from optbench.core.logs import quiet_routine_logs
from optbench.tracking import TAG_PREFIX

log = logging.getLogger("optbench.study")

# Final metrics kept per run in verdict.json (the rest stays in MLflow).
FINAL_METRICS = {
    "test_acc": "test/acc",
    "test_loss": "test/loss",
    "val_acc_best": "val/acc_best",
    "val_loss": "val/loss",
    "train_acc": "train/acc",
    "train_loss": "train/loss",
    "steps": "train/steps",
    "train_s": "time/train_s",
    "diverged": "train/diverged",
    "dist_to_opt": "train/dist_to_opt",
    "skipped_steps": "amp/skipped_steps",
    "loss_scale": "amp/loss_scale",
}


@dataclass
class Study:
    """One study being run: its config, its verdict run in MLflow and a scratch directory for its runs."""

    cfg: DictConfig
    client: MlflowClient
    parent_run_id: str
    workdir: Path
    n_runs: int = field(default=0)

    @property
    def experiment(self) -> str:
        return f"study-{self.cfg.name}"

    def train(
        self,
        case: str,
        variant: str,
        overrides: Sequence[str],
        *,
        keep_params: bool = False,
        allow_diverged: bool = False,
        callbacks: Sequence[Any] = (),
    ) -> dict[str, Any]:
        """Train one run (the study's `train` overrides, then `overrides`) and return its final metrics;
        with `keep_params`, also its final state_dict under "state" (not written to verdict.json)."""
        import torch

        from optbench.training.train import train  # Lightning is slow to import; `list` does not need it

        quiet_routine_logs()  # their banners would repeat for every run
        stem = f"{case}-{variant}"
        steps = [f"trainer.max_steps={self.cfg.steps}", "trainer.max_epochs=-1"] if self.cfg.get("steps") else []
        train_cfg = compose_config(
            *self.cfg.train,
            f"seed={self.cfg.seed}",
            *steps,  # the run's length is max_steps
            *overrides,
            f"experiment={self.experiment}",
            f"metrics_path={self.workdir / (stem + '.json')}",
            f"checkpoint.dir={self.workdir / 'checkpoints'}",
            f"params_path={self.workdir / (stem + '.pt')}" if keep_params else "params_path=null",
        )
        tags = {
            "mlflow.runName": stem,
            "mlflow.parentRunId": self.parent_run_id,
            TAG_PREFIX + "study": self.cfg.name,
            TAG_PREFIX + "study_case": case,
            TAG_PREFIX + "study_variant": variant,
        }
        log.info("Study %s: %s (%s)", self.cfg.name, stem, " ".join(overrides))
        metrics = train(train_cfg, tags=tags, callbacks=callbacks)
        self.n_runs += 1
        if metrics.get("train/diverged", 0.0) > 0 and not allow_diverged:
            raise OptbenchError(f"study {self.cfg.name}: run {stem} diverged; lower its learning rate.")
        final: dict[str, Any] = {key: metrics[name] for key, name in FINAL_METRICS.items() if name in metrics}
        final["run_id"] = metrics.get("run_id")
        if keep_params:
            final["state"] = torch.load(self.workdir / (stem + ".pt"), map_location="cpu", weights_only=True)
        return final

    def tune(self, case: str, overrides: Sequence[str]) -> dict[str, Any]:
        """Tune one case with the study's equal budget (`tune`: optbench-tune overrides, the same for every
        case): fresh Optuna studies (`tune.n_studies` of them) in the scratch directory, nested under the
        verdict run in MLflow. Returns best.json's content (the median study's settings, and under `studies`
        every study's best and their spread) plus every trial of every study: its settings, value, outcome
        and study index."""
        import optuna

        from optbench.tuning.replicate import replica_name, trial_seed
        from optbench.tuning.spaces import parse_search_space, settings_of
        from optbench.tuning.tune import counted_trials, tune

        name = f"{self.cfg.name}-{case}"
        storage = f"sqlite:///{self.workdir / ('optuna-' + case + '.db')}"
        tune_cfg = compose_config(
            *self.cfg.train,
            *overrides,
            *([f"tune.seed={self.cfg.tune_seed}"] if self.cfg.get("tune_seed") is not None else []),
            *self.cfg.tune,
            f"experiment={self.experiment}",
            f"tune.storage={storage}",
            f"tune.study_name={name}",
            f"tune.output_dir={self.workdir / 'tune'}",
            f"checkpoint.dir={self.workdir / 'checkpoints'}",
            config_name="tune",
        )
        tuning_seeds = {trial_seed(tune_cfg, i) for i in range(tune_cfg.tune.n_studies)}
        if tuning_seeds & set(self.cfg.get("seeds") or []):
            raise ConfigError(
                f"study {self.cfg.name}: its tuning seeds {sorted(tuning_seeds)} (tune.seed + study index) overlap "
                f"its evaluation seeds {list(self.cfg.seeds)}; tuning on an evaluation seed leaks into the "
                "measurement. Set tune_seed (or tune.seed) apart from the seeds, e.g. 1000."
            )
        summary = tune(tune_cfg)
        space = parse_search_space(tune_cfg)
        summary["trials"] = []
        for index in range(tune_cfg.tune.n_studies):
            study = optuna.load_study(study_name=replica_name(name, index), storage=storage)
            parent = study.user_attrs.get("mlflow_parent_run_id")
            if parent:
                self.client.set_tag(parent, "mlflow.parentRunId", self.parent_run_id)
            summary["trials"] += [
                {
                    "study": index,
                    "params": settings_of(t.params, space),
                    "value": t.value,
                    "outcome": t.user_attrs.get("outcome", t.state.name.lower()),
                }
                for t in counted_trials(study)
            ]
        for key in ("output_dir", "study_name"):
            summary.pop(key, None)
        self.n_runs += len(summary["trials"])
        return summary

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of one run's metric, in step order, from MLflow."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))
