"""Where optbench's Hydra configs live, and how Python code composes them.

The configs ship inside the package as `optbench.conf` (the repository's top-level `conf/`, mapped into
the package by pyproject.toml), so `pip install .` works from any folder and Hydra finds them through
the search path `pkg://optbench.conf`. `OPTBENCH_CONFIG_DIR=/path/to/conf` swaps in a folder of your
own. Nothing here imports torch, Lightning or MLflow: `--help` and config errors stay fast.
"""

from __future__ import annotations

import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from hydra import compose, initialize_config_dir, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from optbench.core.errors import ConfigError

PACKAGE_CONFIGS = "optbench.conf"


def run_name(cfg: DictConfig) -> str:
    """A training run's name, optimizer first (adamw-cnn-mnist5k-s0): its MLflow run and its terminal summary."""
    return f"{cfg.optimizer.name}-{cfg.model.name}-{cfg.data.name}-s{cfg.seed}"


def srun_tasks_per_node(strategy: str, devices: int) -> int:
    """SLURM tasks per node for a run: one per rank under strategy=ddp (srun starts the ranks, Lightning's
    SLURM environment finds them), else one (ddp_spawn and single-process runs start their own processes)."""
    return int(devices) if strategy == "ddp" else 1


def gpus_per_node(accelerator: str, devices: int) -> int | None:
    """GPUs a SLURM job asks for per node: strategy.devices on a GPU trainer, none on CPU."""
    return int(devices) if accelerator in ("gpu", "cuda") else None


# conf/hydra/launcher/slurm.yaml derives the job's layout from the run's strategy and trainer with these,
# so the tasks SLURM starts and the ranks Lightning expects cannot disagree.
OmegaConf.register_new_resolver("optbench.srun_tasks", srun_tasks_per_node, replace=True)
OmegaConf.register_new_resolver("optbench.gpus_per_node", gpus_per_node, replace=True)


def config_path() -> str:
    """The `config_path` of every optbench entry point: $OPTBENCH_CONFIG_DIR, else the packaged configs."""
    custom = os.environ.get("OPTBENCH_CONFIG_DIR")
    return str(Path(custom).resolve()) if custom else f"pkg://{PACKAGE_CONFIGS}"


def config_root() -> Traversable:
    """The config folder as a readable tree (a plain folder, or the package's resources)."""
    custom = os.environ.get("OPTBENCH_CONFIG_DIR")
    return Path(custom).resolve() if custom else files(PACKAGE_CONFIGS)


def group_options(group: str) -> list[str]:
    """The options of a config group (`optimizer` -> ["adafactor", "adagrad", ...]), sorted."""
    folder = config_root().joinpath(group)
    if not folder.is_dir():
        return []
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_option(group: str, option: str) -> DictConfig:
    """One option's YAML file as it is written (no defaults list applied)."""
    entry = config_root().joinpath(group, f"{option}.yaml")
    if not entry.is_file():
        valid = ", ".join(group_options(group)) or "none"
        raise ConfigError(f"Unknown {group} '{option}'. Valid options: {valid}.")
    return OmegaConf.create(entry.read_text())


def _initialize():
    custom = os.environ.get("OPTBENCH_CONFIG_DIR")
    if custom:
        return initialize_config_dir(config_dir=str(Path(custom).resolve()), version_base="1.3")
    return initialize_config_module(config_module=PACKAGE_CONFIGS, version_base="1.3")


def compose_config(*overrides: str, config_name: str = "train", hydra_node: bool = True) -> DictConfig:
    """Compose conf/<config_name>.yaml as the command line would, for use from Python (studies, tests,
    benchmarks, notebooks): Hydra's compose API, with HydraConfig set so ${hydra:...} interpolations resolve
    (`hydra_node=False`: a plain config that uses no such interpolation, such as a study's)."""
    with _initialize():
        try:
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=hydra_node)
        except HydraException as err:  # an unknown option or a malformed override: one paragraph, no traceback
            message = " ".join(str(err).split("Config search path")[0].split())
            raise ConfigError(f"Cannot compose {config_name}.yaml with {' '.join(overrides)}: {message}") from None
    if not hydra_node:
        return cfg
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # the task function never sees the hydra node
    return cfg
