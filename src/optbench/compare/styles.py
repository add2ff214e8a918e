"""One look per optimizer in every plot of a comparison: a colour, a line style and a marker, so curves that
coincide (two optimizers with the same profile, the same accuracy) still show as two."""

from __future__ import annotations

from typing import Any

import matplotlib

LINE_STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def colors(names: list[str]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def line_style(i: int, n_points: int) -> dict[str, Any]:
    """The i-th optimizer's line style and marker, about 8 markers per line."""
    return {
        "ls": LINE_STYLES[i % len(LINE_STYLES)],
        "marker": MARKERS[i % len(MARKERS)],
        "markevery": max(1, n_points // 8),
        "markersize": 4,
    }
