"""Search spaces: the `tune.search_space` grammar, how a trial samples it, and how a sample becomes config values.

An entry names a dotted config key (a list element too: `optimizer.betas.0`) and how it is sampled:
{low, high, log} (float), {low, high, step, type: int} or {choices: [...]}. Three additions serve the
nuisance hyperparameters of `tune=full`:
  transform: one_minus   the sampled value v sets key = 1 - v (momentum and betas live near 1, so their
                         distance from 1 is what spans decades and is searched on a log scale)
  optimizers: [...]      the entry applies only to these optimizers (weight decay where the optimizer has it)
  schedulers: [...]      the entry applies only to these schedules (a warmup fraction where there is warmup)
An entry set to null is not searched (`tune.search_space.eps=null`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig, ListConfig, OmegaConf

from optbench.core.errors import ConfigError

TRANSFORMS = ("one_minus",)


@dataclass(frozen=True)
class SearchParam:
    """One searched setting: a dotted config key, how Optuna samples it, and how a sample maps to the key."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    is_int: bool = False
    choices: tuple | None = None
    transform: str | None = None

    @property
    def name(self) -> str:
        """The Optuna parameter name: the key, or `1-key` where the sampled value is 1 - setting."""
        return f"1-{self.key}" if self.transform == "one_minus" else self.key

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this parameter in `trial`; returns the config value (transform applied)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return self.setting(trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log))

    def setting(self, sampled: Any) -> Any:
        """The config value for a sampled value."""
        return 1.0 - sampled if self.transform == "one_minus" else sampled

    def record(self) -> dict[str, Any]:
        """How this key was searched, for best.json and the report."""
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log, "transform": self.transform}


def parse_search_space(cfg: DictConfig) -> list[SearchParam]:
    """The `tune.search_space` entries that apply to this config's optimizer and schedule, checked against
    the config they will override."""
    space = cfg.tune.search_space
    params = []
    for name, spec in OmegaConf.to_container(space, resolve=True).items() if space else ():
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise ConfigError(
                f"tune.search_space.{name} must be a mapping ({{key, low, high}} or {{choices}}), got {spec!r}."
            )
        if not _applies(name, spec, cfg):
            continue
        key = spec.get("key", name)
        _check_key(cfg, key)
        params.append(_parse_spec(name, key, spec))
    if not params:
        raise ConfigError(
            f"tune.search_space has no entry for optimizer={cfg.optimizer.name}: name at least one setting to "
            "search (e.g. optimizer.lr)."
        )
    keys = [p.key for p in params]
    if len(set(keys)) < len(keys):
        raise ConfigError(f"tune.search_space sets the same key twice: {sorted(k for k in keys if keys.count(k) > 1)}.")
    return params


def _applies(name: str, spec: dict, cfg: DictConfig) -> bool:
    for field, chosen in (("optimizers", cfg.optimizer.name), ("schedulers", cfg.scheduler.name)):
        allowed = spec.get(field)
        if allowed is None:
            continue
        if not isinstance(allowed, list):
            raise ConfigError(f"tune.search_space.{name}.{field} must be a list of names, got {allowed!r}.")
        if chosen not in allowed:
            return False
    return True


def _check_key(cfg: DictConfig, key: str) -> None:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, ListConfig):
        if leaf.isdigit() and int(leaf) < len(node):
            return
        raise ConfigError(f"Unknown search-space parameter '{key}': {parent} is a list of {len(node)} values.")
    if node is None or leaf not in node:
        settings = ", ".join(f"{parent}.{k}" if parent else k for k in node) if node is not None else ""
        raise ConfigError(
            f"Unknown search-space parameter '{key}': it is not a setting of this config"
            + (f". Settings there: {settings}." if settings else f" (no '{parent}' section).")
        )


def _parse_spec(name: str, key: str, spec: dict) -> SearchParam:
    where = f"tune.search_space.{name}"
    transform = spec.get("transform")
    if transform is not None and transform not in TRANSFORMS:
        raise ConfigError(f"{where}.transform must be one of {', '.join(TRANSFORMS)} (or absent), got {transform!r}.")
    if "choices" in spec:
        if not spec["choices"]:
            raise ConfigError(f"{where}.choices is empty: give at least one value.")
        if transform is not None:
            raise ConfigError(f"{where}: a transform applies to a numeric range, not to choices.")
        return SearchParam(key, choices=tuple(spec["choices"]))
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{where} needs numeric low and high (or choices), got {spec}.")
    if not low < high:
        raise ConfigError(f"{where} ({key}) has an empty or inverted range: low={low} >= high={high}.")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where} ({key}) is searched on a log scale, so low must be > 0 (got {low}).")
    if transform == "one_minus" and not 0 <= low < high <= 1:
        raise ConfigError(f"{where} ({key}) samples 1 - {key}, so 0 <= low < high <= 1 (got {low}, {high}).")
    is_int = spec.get("type") == "int"
    return SearchParam(key, float(low), float(high), bool(spec.get("log")), spec.get("step"), is_int, None, transform)


def settings_of(params: dict[str, Any], space: list[SearchParam]) -> dict[str, Any]:
    """Config values {key: value} of a trial's Optuna params (sampled values, by parameter name)."""
    return {p.key: p.setting(params[p.name]) for p in space if p.name in params}


def space_record(space: list[SearchParam]) -> dict[str, dict[str, Any]]:
    """{key: {low, high, log, transform} or {choices}}: what best.json and the parent run record."""
    return {p.key: p.record() for p in space}


def describe(space: list[SearchParam]) -> str:
    """One line per searched key, for the log."""
    lines = []
    for p in space:
        if p.choices is not None:
            lines.append(f"  {p.key} in {list(p.choices)}")
            continue
        scale = "log" if p.log else "linear"
        sampled = f"1 - {p.key}" if p.transform == "one_minus" else p.key
        lines.append(f"  {sampled} in [{p.low:.3g}, {p.high:.3g}] ({scale})")
    return "\n".join(lines)
