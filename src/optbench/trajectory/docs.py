"""Regenerate docs/trajectory.md's tables and images from the commands written in it.

Each generated block starts with the command line it comes from and ends with a closing marker:

    <!-- trajectory rosenbrock: function=rosenbrock 'optimizers=[sgd,momentum,adam]' -->
    ...the image and the table, rewritten on every run...
    <!-- end trajectory rosenbrock -->

`python -m optbench.trajectory.docs` runs each command (the same config and code as optbench-trajectory),
writes docs/images/trajectory-<slug>.png and .gif, and replaces the block with the image and the table
rendered from the run's trajectory.json record. `--check` runs the commands without figures and exits 1
if a table in the file differs from what they compute now, so the numbers in the docs cannot drift.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import sys
import tempfile
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from optbench.core.config import compose_config
from optbench.core.errors import user_errors
from optbench.trajectory.publish import trajectory
from optbench.trajectory.table import markdown

BLOCK = re.compile(
    r"<!-- trajectory (?P<slug>[\w-]+): (?P<args>.*?) -->\n(?P<body>.*?)<!-- end trajectory (?P=slug) -->", re.S
)


def block_body(slug: str, record: dict, images: str) -> str:
    """What a block holds: the PNG (linked to the animation) and the table."""
    return (
        f"[![{record['function']}: optimizer paths]({images}/trajectory-{slug}.png)]({images}/trajectory-{slug}.gif)\n\n"
        f"{markdown(record)}"
    )


def run_block(args: str, output_dir: Path, figures: bool) -> dict:
    overrides = [*shlex.split(args), f"output_dir={output_dir}"]
    if not figures:
        overrides.append("figure.animation=none")
    with redirect_stdout(StringIO()):  # the generator reports the blocks, not every table twice
        return trajectory(compose_config(*overrides, config_name="trajectory"))


def regenerate(doc: Path, check: bool = False) -> list[str]:
    """Rewrite (or with `check`, compare) every block of `doc`; return the slugs that differ."""
    text = doc.read_text()
    images = doc.parent / "images"
    stale: list[str] = []
    if not check:
        images.mkdir(parents=True, exist_ok=True)

    def replace(match: re.Match) -> str:
        slug, args = match["slug"], match["args"]
        with tempfile.TemporaryDirectory() as tmp:
            record = run_block(args, Path(tmp), figures=not check)
            body = block_body(slug, record, "images")
            if not check:
                for suffix in ("png", "gif"):
                    shutil.copyfile(Path(tmp) / f"trajectory.{suffix}", images / f"trajectory-{slug}.{suffix}")
        if body != match["body"]:
            stale.append(slug)
        print(f"{slug}: {'differs' if body != match['body'] else 'same'} ({args})")
        return f"<!-- trajectory {slug}: {args} -->\n{body}<!-- end trajectory {slug} -->"

    updated = BLOCK.sub(replace, text)
    if not check:
        doc.write_text(updated)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("doc", nargs="?", default="docs/trajectory.md", type=Path)
    parser.add_argument("--check", action="store_true", help="compare the tables; write nothing")
    options = parser.parse_args(argv)
    with user_errors():
        stale = regenerate(options.doc, check=options.check)
    if options.check and stale:
        print(f"{options.doc}: tables out of date ({', '.join(stale)}); run python -m optbench.trajectory.docs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
