"""optbench-study: the claim studies, each a reproducible pipeline that ends in a measured verdict.

optbench-study list                                  # each study's question and last verdict
optbench-study run adam_vs_sgd                       # run it; writes pipelines/<study>/results/
optbench-study run grad_accumulation --preset test   # the test-sized form
optbench-study run loss_vs_lr_scale --set steps=20 --set 'run_cases=[sgd,adam]'
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from optbench.core.errors import user_errors
from optbench.core.logs import quiet_known_warnings
from optbench.studies.config import load_study, results_dir, study_names


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="optbench-study", description="optbench claim studies: measured verdicts")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="each study's question and last verdict")
    run = commands.add_parser("run", help="run a study and write its verdict and report")
    run.add_argument("name", help="a study: " + ", ".join(study_names()))
    run.add_argument("--preset", help="apply presets.<PRESET> of the study's config first (e.g. test, gpu)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override of a key of the study's config (repeatable), e.g. --set steps=20",
    )
    run.add_argument("--output-dir", type=Path, help="where to write the results (default pipelines/<name>/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_known_warnings()
    with user_errors():
        from optbench.studies.report import list_studies, print_verdict  # rich tables

        if args.command == "list":
            list_studies()
            return
        cfg = load_study(args.name, args.preset, args.overrides)
        output_dir = args.output_dir or results_dir(args.name)
        from optbench.studies.run import run_study  # MLflow loads only once a study runs

        verdict = run_study(cfg, output_dir)
    print_verdict(verdict, output_dir)


if __name__ == "__main__":
    main()
