"""The trajectory picture: the function's contour map (log-spaced levels of f - f*), its minima, saddles and
start point, and one path per optimizer in the colours and markers every optbench comparison uses; the
animation grows the same paths frame by frame (matplotlib's PillowWriter writes the GIF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.colors import LogNorm, Normalize
from PIL import Image

from optbench.compare.styles import LINE_STYLES, MARKERS, colors
from optbench.core.figures import save_figure, subplots
from optbench.trajectory.functions import TestFunction


class PalettePillowWriter(PillowWriter):
    """matplotlib's PillowWriter with every frame on one adaptive palette, undithered. Pillow's default
    RGB-to-GIF conversion dithers onto a fixed web palette, which turns the contour shading into pixel noise;
    one shared palette also lets Pillow store each later frame as only the region that changed. The palette
    comes from the last frame, which holds every path in full and so every colour."""

    def finish(self) -> None:
        frames = [frame.convert("RGB") for frame in self._frames]
        palette = frames[-1].quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        self._frames = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
        super().finish()


GRID = 300  # contour grid points per axis: smooth lines at any figure size used here


def contour_levels(function: TestFunction, gap: np.ndarray) -> np.ndarray:
    """Contour levels of f - f* over the plot window: log-spaced from a level just above the floor (f* itself
    has no logarithm) to the largest value, or evenly spaced for `levels.scale: linear`."""
    top = float(gap.max())
    if function.levels == "linear":
        return np.linspace(0.0, top, function.n_levels + 1)[1:]
    floor = max(float(np.percentile(gap, 0.5)), top * 1e-10)
    return np.logspace(np.log10(floor), np.log10(top), function.n_levels)


def draw_surface(ax: Any, function: TestFunction) -> None:
    xs = np.linspace(*function.xlim, GRID)
    ys = np.linspace(*function.ylim, GRID)
    x, y = np.meshgrid(xs, ys)
    gap = np.maximum(function(x, y) - function.minimum_value, 0.0)
    levels = contour_levels(function, gap)
    norm = LogNorm(levels[0], levels[-1]) if function.levels == "log" else Normalize(0.0, levels[-1])
    ax.contourf(x, y, np.clip(gap, levels[0], None), levels=levels, cmap="Greys", norm=norm, alpha=0.3, extend="both")
    ax.contour(x, y, gap, levels=levels, colors="0.45", linewidths=0.45, alpha=0.7)
    for mx, my in function.minima:
        ax.plot(mx, my, marker="*", ms=15, color="gold", mec="black", mew=0.8, ls="none", zorder=5)
    for sx, sy in function.saddles:
        ax.plot(sx, sy, marker="X", ms=9, color="white", mec="black", mew=0.8, ls="none", zorder=5)
    ax.plot(*function.start, marker="o", ms=8, color="white", mec="black", mew=1.2, ls="none", zorder=5)
    ax.set_xlim(*function.xlim)
    ax.set_ylim(*function.ylim)
    width, height = np.ptp(function.xlim), np.ptp(function.ylim)
    if 1 / 3 <= width / height <= 3:  # equal aspect shows the true geometry unless the window is a strip
        ax.set_aspect("equal")
    ax.set(xlabel="x", ylabel="y")


def _label(outcome: dict) -> str:
    if outcome["steps_to_tolerance"] is not None:
        reached = f"{outcome['steps_to_tolerance']} steps"
    else:
        reached = outcome["status"]
    return f"{outcome['optimizer']} (lr {outcome['lr']:g}): {reached}"


def _figure(record: dict) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
    """The figure with the surface drawn and one (line, end marker) pair per optimizer, still empty."""
    function = TestFunction(
        name=record["function"],
        formula=record["formula"],
        params=record["params"],
        minima=[tuple(m) for m in record["minima"]],
        start=tuple(record["start"]),
        xlim=tuple(record["figure"]["xlim"]),
        ylim=tuple(record["figure"]["ylim"]),
        levels=record["figure"]["levels"],
        n_levels=record["figure"]["n_levels"],
        saddles=[tuple(s) for s in record["figure"]["saddles"]],
    )
    ratio = np.ptp(function.xlim) / np.ptp(function.ylim)
    fig, ax = subplots(figsize=(4.4 * min(ratio, 3.0) + 3.6, 5.4))  # the map at its aspect, and the legend
    draw_surface(ax, function)
    names = [o["optimizer"] for o in record["outcomes"]]
    palette = colors(names)
    artists = {}
    for i, outcome in enumerate(record["outcomes"]):
        name = outcome["optimizer"]
        style = LINE_STYLES[i % len(LINE_STYLES)]  # paths that coincide still show as two
        (line,) = ax.plot([], [], color=palette[name], ls=style, lw=1.7, label=_label(outcome), zorder=3)
        (end,) = ax.plot([], [], color=palette[name], marker=MARKERS[i % len(MARKERS)], ms=7, mec="black", mew=0.6)
        end.set_zorder(4)
        artists[name] = (line, end)
    noise = f", gradient noise {record['noise']:g} (seed {record['seed']})" if record["noise"] else ""
    target = "distance to minimum" if record["tolerance_on"] == "distance" else "f - f*"
    ax.set_title(
        f"{record['function']}: {record['steps']} steps{noise}\nsteps until {target} < {record['tolerance']:g}",
        fontsize=11,
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)  # off the paths
    return fig, ax, artists


def _show(record: dict, artists: dict, step: int) -> None:
    """Each path up to `step` (a diverged path stops where it left the finite numbers)."""
    for name, (line, end) in artists.items():
        points = np.asarray(record["paths"][name]["points"])[: step + 1]
        line.set_data(points[:, 0], points[:, 1])
        end.set_data(points[-1:, 0], points[-1:, 1])


def plot_paths(record: dict, path: Path, dpi: int = 110) -> Path:
    """trajectory.png: every path in full."""
    fig, _, artists = _figure(record)
    _show(record, artists, record["steps"])
    return save_figure(fig, path, dpi=dpi)


def frame_steps(steps: int, frames: int, log_steps: bool = True) -> list[int]:
    """The step each frame shows, ending at `steps`: spaced evenly in log(step) (early moves are large and
    fast, late ones small and slow) or evenly in steps; duplicates dropped."""
    if log_steps:
        chosen = np.unique(np.round(np.geomspace(1, steps, frames)).astype(int))
    else:
        chosen = np.unique(np.round(np.linspace(1, steps, frames)).astype(int))
    return [0, *chosen.tolist()] if steps > 0 else [0]


def animate_paths(record: dict, path: Path, frames: int, fps: int, dpi: int, log_steps: bool = True) -> Path:
    """trajectory.gif: the paths growing, the last frame held for a second."""
    fig, ax, artists = _figure(record)
    title = ax.get_title()
    fig.tight_layout()
    writer = PalettePillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi):
        shown = frame_steps(record["steps"], frames, log_steps)
        for step in shown + [shown[-1]] * fps:
            _show(record, artists, step)
            ax.set_title(f"{title}  [step {step}]", fontsize=11)
            writer.grab_frame()
    return path
