"""optbench-study: the claim studies, each a reproducible pipeline that ends in a measured verdict.

optbench-study list                                  # each study's question and last verdict
optbench-study run adam_vs_sgd                       # run it; writes pipelines/<study>/results/
optbench-study run grad_accumulation --preset test   # the test-sized form
optbench-study run loss_vs_lr_scale --set steps=20 --set 'run_cases=[sgd,adam]'
optbench-study docs [--check]                        # the measured parts of the docs, from the results
"""

from __future__ import annotations

import argparse
import logging
import sys
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
    docs = commands.add_parser("docs", help="write the measured parts of docs/studies.md and README.md")
    docs.add_argument("--check", action="store_true", help="only compare: exit 1 when a doc disagrees")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_known_warnings()
    with user_errors():
        from optbench.studies.report import list_studies, print_verdict  # rich tables

        if args.command == "list":
            list_studies()
            return
        if args.command == "docs":
            docs_command(args.check)
            return
        cfg = load_study(args.name, args.preset, args.overrides)
        output_dir = args.output_dir or results_dir(args.name)
        from optbench.studies.run import run_study  # MLflow loads only once a study runs

        verdict = run_study(cfg, output_dir)
    print_verdict(verdict, output_dir)


def docs_command(check: bool) -> None:
    from optbench.studies.docs import generate_docs

    differ = generate_docs(Path("."), check=check)
    if not differ:
        print("optbench-study docs: every generated part agrees with its result files.")
    elif check:
        names = ", ".join(str(path) for path in differ)
        print(
            f"optbench-study docs --check: {names} disagree with the result files they are generated from "
            "(a measured number was edited by hand, or a result changed): run `optbench-study docs`.",
            file=sys.stderr,
        )
        sys.exit(1)
    else:
        print("optbench-study docs: rewrote " + ", ".join(str(path) for path in differ))


if __name__ == "__main__":
    main()
