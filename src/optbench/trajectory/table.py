"""The steps-to-tolerance table, from trajectory.json's record: Markdown (trajectory.md, docs) and the
terminal (rich, as the comparison report prints its table)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

HEADERS = ("Optimizer", "lr", "Steps to tolerance", "Final distance", "Final f − f*", "Evaluations")


def rows(record: dict) -> list[tuple[str, ...]]:
    """One row per optimizer, in the order they were run; numbers to 3 significant digits."""
    shown = []
    for o in record["outcomes"]:
        if o["steps_to_tolerance"] is not None:
            reached = str(o["steps_to_tolerance"])
        elif o["status"] == "diverged":
            reached = f"diverged at step {o['steps'] + 1}"
        else:
            reached = "not reached"
        shown.append(
            (
                o["optimizer"],
                f"{o['lr']:g}",
                reached,
                f"{o['final_distance']:.3g}",
                f"{o['final_gap']:.3g}",
                str(o["evaluations"]),
            )
        )
    return shown


def caption(record: dict) -> str:
    target = "distance to the nearest minimum" if record["tolerance_on"] == "distance" else "f − f*"
    noise = f", gradient noise σ = {record['noise']:g} (seed {record['seed']})" if record["noise"] else ""
    start = ", ".join(f"{v:g}" for v in record["start"])
    return (
        f"{record['function']} from ({start}), {record['steps']} steps{noise}: steps until the {target} "
        f"is below {record['tolerance']:g}."
    )


def markdown(record: dict) -> str:
    lines = [caption(record), "", "| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] + ["---:"] * 5) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(record)]
    return "\n".join(lines) + "\n"


def print_table(record: dict, console: Console | None = None) -> None:
    table = Table(title=caption(record), show_lines=False)
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "Optimizer" else "right")
    for row in rows(record):
        table.add_row(*[Text(v) for v in row])  # Text: values are not rich markup
    if console is None:  # a pipe or a log file gets wide lines rather than cells cut to fit 80 columns
        console = Console() if Console().is_terminal else Console(width=200)
    console.print(table)
