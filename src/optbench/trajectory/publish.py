"""optbench-trajectory's pipeline, top to bottom: the function, the optimizers' paths, the table, the files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from optbench.core.errors import ConfigError
from optbench.trajectory.functions import load_function
from optbench.trajectory.plot import animate_paths, plot_paths
from optbench.trajectory.run import result_record, run_trajectories
from optbench.trajectory.table import markdown, print_table

log = logging.getLogger("optbench.trajectory")
ANIMATIONS = ("gif", "none")


def trajectory(cfg: DictConfig) -> dict:
    """Run every optimizer of `cfg.optimizers` on `cfg.function`, write trajectory.json (settings, table and
    paths), trajectory.md (the table), trajectory.png and trajectory.gif to `cfg.output_dir`, print the table;
    return the record written to trajectory.json."""
    if cfg.figure.animation not in ANIMATIONS:
        raise ConfigError(f"figure.animation={cfg.figure.animation}: use one of {', '.join(ANIMATIONS)}.")
    if int(cfg.steps) < 1:
        raise ConfigError(f"steps={cfg.steps}: give at least one optimizer step.")
    function = load_function(cfg.function)
    paths, outcomes = run_trajectories(cfg, function)
    record = result_record(cfg, function, paths, outcomes)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trajectory.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "trajectory.md").write_text(markdown(record))
    written = [
        out / "trajectory.json",
        out / "trajectory.md",
        plot_paths(record, out / "trajectory.png", cfg.figure.dpi),
    ]
    if cfg.figure.animation == "gif":
        figure = cfg.figure
        written.append(
            animate_paths(
                record, out / "trajectory.gif", figure.frames, figure.fps, figure.animation_dpi, figure.log_steps
            )
        )
    print_table(record)
    log.info("Wrote %s", ", ".join(str(p) for p in written))
    return record
