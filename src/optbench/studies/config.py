"""A study's config: conf/study/<name>.yaml composed by Hydra, with a preset and overrides applied.

    load_study("adam_vs_sgd", preset="test", overrides=["seeds=[1,2]"])

The study file is the one source of its settings: the DVC stage of pipelines/<name>/ tracks its keys as
params (so `dvc exp run -S conf/study/<name>.yaml:seeds=[1,2,3]` works), and `optbench-study run` reads
nothing else. A preset (`presets.<preset>` of the file) is a set of overrides applied before the user's:
both go through Hydra's override grammar, so a typo, an unknown key or a malformed value is refused
before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from optbench.core.config import compose_config, group_options, load_option
from optbench.core.errors import ConfigError

REQUIRED_KEYS = ("name", "kind", "question", "claim", "measure", "threshold", "seed", "train")
RESULTS_ROOT = Path("pipelines")  # pipelines/<study>/results, relative to the repository root (DVC's wdir)


def study_names() -> list[str]:
    return group_options("study")


def results_dir(name: str) -> Path:
    return RESULTS_ROOT / name / "results"


def override(key: str, value: Any) -> str:
    """`key=value` in Hydra's override grammar (strings quoted, lists and mappings in brackets)."""
    return f"{key}={_value(value)}"


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as a Hydra override")


def _scoped(item: str) -> str:
    """A user's override of a study key (`seeds=[1,2]`, `+notes=[...]`) as an override of study.<key>."""
    prefix = item[: len(item) - len(item.lstrip("+~"))]
    return f"{prefix}study.{item[len(prefix) :]}"


def load_study(name: str, preset: str | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """conf/study/<name>.yaml with `presets.<preset>` and then `overrides` (Hydra syntax) applied."""
    if name not in study_names():
        raise ConfigError(f"Unknown study '{name}'. Studies: {', '.join(study_names()) or 'none'}.")
    preset_overrides: list[str] = []
    if preset is not None:
        presets = load_option("study", name).get("presets") or {}
        if preset not in presets:
            raise ConfigError(f"Study {name} has no preset '{preset}'. Presets: {', '.join(presets) or 'none'}.")
        values = OmegaConf.to_container(presets[preset])
        preset_overrides = [override(f"study.{key}", value) for key, value in values.items()]
    user = [_scoped(item) for item in overrides]
    try:
        cfg = compose_config(f"study={name}", *preset_overrides, *user, config_name="claim_study", hydra_node=False)
    except ConfigError as err:
        raise ConfigError(f"study {name}: {err}") from None
    cfg = cfg.study
    OmegaConf.set_struct(cfg, False)  # kinds read optional keys with cfg.get
    missing = [key for key in REQUIRED_KEYS if key not in cfg]
    if missing:
        raise ConfigError(f"conf/study/{name}.yaml lacks {', '.join(missing)}.")
    if cfg.get("steps") is not None and not (isinstance(cfg.steps, int) and cfg.steps >= 1):
        raise ConfigError(f"study {name}: steps must be a positive integer, got {cfg.steps!r}.")
    if not (isinstance(cfg.threshold, (int, float)) and cfg.threshold >= 0):
        raise ConfigError(f"study {name}: threshold must be a number >= 0, got {cfg.threshold!r}.")
    cfg.preset = preset
    selected_cases(cfg)  # an unknown case is refused before anything runs
    return cfg


def case_names(cfg: DictConfig) -> list[str]:
    """The cases a study can run: the keys of `cases`, the optimizer+schedule pairs of `grid`, or the
    gradient regimes of `regimes`."""
    if cfg.get("cases"):
        return list(cfg.cases)
    if cfg.get("grid"):
        names = [""]
        for options in cfg.grid.values():
            names = [f"{a}+{b}" if a else str(b) for a in names for b in options]
        return names
    return list(cfg.get("regimes") or [])


def selected_cases(cfg: DictConfig) -> list[str]:
    """The cases to run: the list `run_cases` if given, else every case (see `case_names`)."""
    known = case_names(cfg)
    names = list(cfg.get("run_cases") or known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"study {cfg.name}: unknown cases {', '.join(unknown)}. Cases: {', '.join(known)}.")
    return names


def seeds_of(cfg: DictConfig) -> list[int]:
    seeds = list(cfg.get("seeds") or [cfg.seed])
    if not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"study {cfg.name}: seeds must be integers, got {seeds}.")
    return seeds
