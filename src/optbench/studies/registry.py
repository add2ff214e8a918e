"""Study kinds: one kind of measurement each, registered under the entry-point group optbench.study_kinds.

A study's YAML names its `kind`; only that kind's module is imported. A new kind is one module with one
class and one line under [project.entry-points."optbench.study_kinds"] in pyproject.toml (or in a package
of your own: pytest-style plug-ins, nothing central lists them).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from optbench.core.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from optbench.studies.runner import Study

GROUP = "optbench.study_kinds"


class StudyKind(Protocol):
    """One kind of measurement."""

    plot_name: str  # the figure run_study writes next to report.md

    def measure(self, study: Study) -> dict[str, Any]:
        """Run the study; return {"cases": [{"case", "verdict", "value", ...}], ...}."""

    def rule(self, cfg: DictConfig) -> str:
        """How a verdict follows from the numbers and the threshold, in one sentence."""

    def report(self, verdict: dict[str, Any]) -> list[str]:
        """The report's Markdown tables."""

    def plot(self, verdict: dict[str, Any], path: Path) -> None: ...


def kind_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_kind(name: str, study: str = "") -> StudyKind:
    """The registered kind `name`, instantiated; a clear error for a name nobody registered."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        where = f"study {study}: " if study else ""
        raise ConfigError(f"{where}unknown kind '{name}'. Kinds: {', '.join(kind_names()) or 'none registered'}.")
    return found[0].load()()
