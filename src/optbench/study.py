"""optbench-study: claim studies, the classic optimizer questions as measured verdicts.

    optbench-study list                                  # each study's question and last verdict
    optbench-study run loss_vs_lr_scale                  # run it; writes pipelines/<study>/results/
    optbench-study run grad_accumulation --preset test   # the test-sized form
    optbench-study run loss_vs_lr_scale --set steps=20 --set 'optimizers=[sgd,adam]'

A study is one YAML file, conf/study/<name>.yaml: the question, the claim, the measure, the `threshold`,
the `cases` and their training overrides. `optbench-study run` merges, in this order, that file,
pipelines/<name>/params.yaml (the knobs its DVC stage tracks), a preset of the file (`--preset`) and
`--set key=value` overrides; trains every run in-process through optbench.train.train (one MLflow run each,
in the experiment study-<name>, nested under the study's verdict run); computes each case's verdict from the
measured numbers against the threshold; and writes verdict.json, report.md and distance.png. The same
files are logged as artifacts of the verdict run (tag optbench.kind=study_verdict), which ends FINISHED,
FAILED or KILLED.

Exact studies (the mathematics predicts the verdict, which is stated as `expected` beside the measured one):
    loss_vs_lr_scale    lr·scale against loss·scale, per optimizer
    grad_accumulation   k accumulated micro-batches of B against one batch of k·B, without and with batch norm
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from rich.text import Text

import optbench
from optbench.config import CONFIG_DIR, compose_config
from optbench.errors import ConfigError, OptbenchError, fail
from optbench.files import write_text
from optbench.tracking import (
    TAG_PREFIX, ends_run, experiment_id, flatten, git_state, log_batched, resolve_tracking_uri,
)  # fmt: skip

log = logging.getLogger("optbench.study")

STUDY_DIR = Path(CONFIG_DIR) / "study"
PIPELINES_DIR = Path(CONFIG_DIR).parent / "pipelines"
KIND = "study_verdict"
EQUIVALENT, NOT_EQUIVALENT = "equivalent", "not equivalent"
# BatchNorm running statistics are state, not parameters: the distance compares learned parameters only.
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
REQUIRED_KEYS = ("name", "kind", "question", "claim", "measure", "threshold", "steps", "seed", "train", "cases")


# --- configuration ----------------------------------------------------------------------------------------


def study_names() -> list[str]:
    return sorted(path.stem for path in STUDY_DIR.glob("*.yaml"))


def results_dir(name: str) -> Path:
    return PIPELINES_DIR / name / "results"


def load_study(name: str, preset: str | None = None, overrides: Sequence[str] = (), params: bool = True) -> DictConfig:
    """conf/study/<name>.yaml, then pipelines/<name>/params.yaml (if `params`), the preset, and overrides."""
    path = STUDY_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"Unknown study '{name}'. Studies: {', '.join(study_names()) or 'none'} (in {STUDY_DIR}).")
    cfg = OmegaConf.load(path)
    params_file = PIPELINES_DIR / name / "params.yaml"
    if params and params_file.is_file():
        knobs = OmegaConf.load(params_file)
        unknown = sorted(set(knobs) - set(cfg))
        if unknown:
            raise ConfigError(f"{params_file} sets {', '.join(unknown)}, which {path} does not have.")
        cfg = OmegaConf.merge(cfg, knobs)
    if preset is not None:
        presets = cfg.get("presets") or {}
        if preset not in presets:
            raise ConfigError(f"Study {name} has no preset '{preset}'. Presets: {', '.join(presets) or 'none'}.")
        cfg = OmegaConf.merge(cfg, presets[preset])
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    missing = [key for key in REQUIRED_KEYS if key not in cfg]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}.")
    if not (isinstance(cfg.steps, int) and cfg.steps >= 1):
        raise ConfigError(f"study {name}: steps must be a positive integer, got {cfg.steps!r}.")
    if not (isinstance(cfg.threshold, (int, float)) and cfg.threshold > 0):
        raise ConfigError(f"study {name}: threshold must be a positive number, got {cfg.threshold!r}.")
    cfg.preset = preset
    return cfg


def selected_cases(cfg: DictConfig) -> list[str]:
    names = list(cfg.get("optimizers") or cfg.cases.keys())
    unknown = [n for n in names if n not in cfg.cases]
    if unknown:
        raise ConfigError(f"study {cfg.name}: unknown cases {', '.join(unknown)}. Cases: {', '.join(cfg.cases)}.")
    return names


# --- measuring ----------------------------------------------------------------------------------------------


def verdict_of(distance: float, threshold: float) -> str:
    return EQUIVALENT if math.isfinite(distance) and distance < threshold else NOT_EQUIVALENT


def parameter_vector(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The learned parameters of a state_dict as one float64 vector (BatchNorm running statistics left out)."""
    keys = [k for k, v in state.items() if torch.is_floating_point(v) and not k.endswith(BUFFER_SUFFIXES)]
    return torch.cat([state[k].detach().double().flatten() for k in keys])


def relative_distance(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """||θ − θ_ref|| / ||θ_ref|| over the learned parameters."""
    a, b = parameter_vector(state), parameter_vector(reference)
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


# Final metrics per run, both evaluated on the final parameters (train/loss is a logged batch loss, not comparable
# between a micro-batch and a large batch).
FINAL_METRICS = {"test_loss": "test/loss", "test_acc": "test/acc", "steps": "train/steps"}


@dataclass
class Runner:
    """Trains one run of a study through optbench.train.train, in the study's MLflow experiment."""

    cfg: DictConfig
    parent_run_id: str | None
    workdir: Path

    def __call__(self, case: str, variant: str, overrides: Sequence[str]) -> tuple[dict[str, Any], dict]:
        from optbench.train import train  # Lightning is slow to import; `list` does not need it

        for noisy in ("lightning.pytorch", "lightning.fabric"):  # device banners and tips, once per run
            logging.getLogger(noisy).setLevel(logging.WARNING)

        stem = f"{case}-{variant}"
        train_cfg = compose_config(
            *self.cfg.train,
            *overrides,
            f"seed={self.cfg.seed}",
            f"trainer.max_steps={self.cfg.steps}",
            "trainer.max_epochs=-1",  # the run's length is max_steps
            f"experiment=study-{self.cfg.name}",
            f"metrics_path={self.workdir / (stem + '.json')}",
            f"params_path={self.workdir / (stem + '.pt')}",
        )
        tags = {
            "mlflow.runName": stem,
            TAG_PREFIX + "study": self.cfg.name,
            TAG_PREFIX + "study_case": case,
            TAG_PREFIX + "study_variant": variant,
        }
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        log.info("Study %s: %s (%s)", self.cfg.name, stem, " ".join(overrides))
        metrics = train(train_cfg, tags=tags)
        if metrics.get("train/diverged", 0.0) > 0:
            raise OptbenchError(f"study {self.cfg.name}: run {stem} diverged; lower its learning rate.")
        final = {key: metrics[name] for key, name in FINAL_METRICS.items() if name in metrics}
        final["run_id"] = metrics.get("run_id")
        state = torch.load(self.workdir / (stem + ".pt"), map_location="cpu", weights_only=True)
        return final, state


def measure_loss_vs_lr_scale(cfg: DictConfig, train_run: Runner) -> list[dict[str, Any]]:
    """Per optimizer: baseline, lr·scale (loss 1) and lr (loss·scale); distance between the last two."""
    scale = float(cfg.scale)
    results = []
    for name in selected_cases(cfg):
        case = cfg.cases[name]
        overrides = list(case.overrides)
        lr = float(compose_config(*cfg.train, *overrides).optimizer.lr)
        runs, states = {}, {}
        for variant, extra in (
            ("baseline", [f"optimizer.lr={lr!r}", "loss_scale=1.0"]),
            ("lr_scaled", [f"optimizer.lr={lr * scale!r}", "loss_scale=1.0"]),
            ("loss_scaled", [f"optimizer.lr={lr!r}", f"loss_scale={scale!r}"]),
        ):
            runs[variant], states[variant] = train_run(name, variant, [*overrides, *extra])
        distance = relative_distance(states["loss_scaled"], states["lr_scaled"])
        results.append(
            {
                "case": name,
                "overrides": overrides,
                "lr": lr,
                "distance": distance,
                "distance_loss_scaled_to_baseline": relative_distance(states["loss_scaled"], states["baseline"]),
                "distance_lr_scaled_to_baseline": relative_distance(states["lr_scaled"], states["baseline"]),
                "runs": runs,
                "why": case.get("why"),
                "expected": case.get("expected"),
            }
        )
    return results


def measure_grad_accumulation(cfg: DictConfig, train_run: Runner) -> list[dict[str, Any]]:
    """Per case: batch B accumulated k times against batch k·B; distance between the two."""
    from optbench.data import load_dataset

    b, k = int(cfg.micro_batch), int(cfg.accumulate)
    if b < 1 or k < 2:
        raise ConfigError(f"study {cfg.name}: micro_batch must be >= 1 and accumulate >= 2, got {b} and {k}.")
    results = []
    for name in selected_cases(cfg):
        case = cfg.cases[name]
        overrides = list(case.overrides)
        n_train = len(load_dataset(compose_config(*cfg.train, *overrides).data).train)
        large_per_epoch = n_train // (k * b)  # whole large batches per epoch; the remainder is never used
        if large_per_epoch < 1:
            raise ConfigError(f"study {cfg.name}: k·B = {k * b} exceeds the {n_train} training examples.")
        runs, states = {}, {}
        for variant, extra in (
            ("accumulated", [f"batch_size={b}", f"trainer.accumulate_grad_batches={k}",
                             f"trainer.limit_train_batches={large_per_epoch * k}"]),
            ("large_batch", [f"batch_size={k * b}", "trainer.accumulate_grad_batches=1",
                             f"trainer.limit_train_batches={large_per_epoch}"]),
        ):  # fmt: skip
            runs[variant], states[variant] = train_run(name, variant, [*overrides, *extra])
        results.append(
            {
                "case": name,
                "overrides": overrides,
                "distance": relative_distance(states["accumulated"], states["large_batch"]),
                "examples_per_epoch": large_per_epoch * k * b,
                "train_examples": n_train,
                "runs": runs,
                "why": case.get("why"),
                "expected": case.get("expected"),
            }
        )
    return results


MEASURES: dict[str, Callable[[DictConfig, Runner], list[dict[str, Any]]]] = {
    "loss_vs_lr_scale": measure_loss_vs_lr_scale,
    "grad_accumulation": measure_grad_accumulation,
}


# --- verdict and report -------------------------------------------------------------------------------------


def build_verdict(cfg: DictConfig, cases: list[dict[str, Any]]) -> dict[str, Any]:
    threshold = float(cfg.threshold)
    for case in cases:
        case["verdict"] = verdict_of(case["distance"], threshold)
        case["times_threshold"] = case["distance"] / threshold
        case["as_expected"] = None if case.get("expected") is None else case["verdict"] == case["expected"]
    equivalent = [c["case"] for c in cases if c["verdict"] == EQUIVALENT]
    others = [c["case"] for c in cases if c["verdict"] != EQUIVALENT]
    summary = "; ".join(
        part
        for part in (f"equivalent: {', '.join(equivalent)}" if equivalent else "",
                     f"not equivalent: {', '.join(others)}" if others else "")
        if part
    )  # fmt: skip
    settings = {
        key: OmegaConf.to_container(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key not in ("name", "kind", "question", "claim", "measure", "threshold", "cases", "notes", "presets",
                       "preset")
    }
    return {
        "study": cfg.name,
        "question": cfg.question,
        "claim": cfg.claim,
        "measure": cfg.measure,
        "threshold": threshold,
        "rule": f"{EQUIVALENT} if distance < {threshold:g}, else {NOT_EQUIVALENT}",
        "preset": cfg.preset,
        "settings": settings,
        "cases": cases,
        "verdicts": {c["case"]: c["verdict"] for c in cases},
        "distances": {c["case"]: c["distance"] for c in cases},  # flat numbers for `dvc metrics show`
        "summary": summary,
        "as_expected": sum(bool(c["as_expected"]) for c in cases),
        "n_cases": len(cases),
        "notes": list(cfg.get("notes") or []),
    }


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def render_report(verdict: dict[str, Any], plot: str | None) -> str:
    kind = verdict["settings"]
    lines = [
        f"# Study {verdict['study']}: {verdict['question']}",
        "",
        f"**Claim.** {verdict['claim']}",
        "",
        f"**Measure.** {verdict['measure']}.",
        "",
        f"**Threshold.** {verdict['rule']} (threshold {verdict['threshold']:g}).",
        "",
        f"**Verdict.** {verdict['summary']}. As the mathematics predicts: {verdict['as_expected']} of "
        f"{verdict['n_cases']} cases.",
        "",
        f"Settings: steps {kind['steps']}, seed {kind['seed']}"
        + (f", preset {verdict['preset']}" if verdict["preset"] else "")
        + f"; runs: `{' '.join(kind['train'])}`.",
        "",
    ]
    if "scale" in kind:
        lines += _loss_scale_table(verdict)
    else:
        lines += _grad_accumulation_table(verdict)
    if plot:
        lines += ["", f"![distance per case against the threshold]({plot})"]
    lines += ["", "## Why (the mathematics' prediction)", ""]
    lines += [f"- **{c['case']}** ({c['expected']}): {c['why']}." for c in verdict["cases"] if c.get("why")]
    if verdict["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note.strip()}" for note in verdict["notes"]]
    mlflow = verdict.get("mlflow")
    if mlflow:
        lines += ["", f"MLflow: experiment `{mlflow['experiment']}`, verdict run `{mlflow['run_id']}`."]
    return "\n".join(lines) + "\n"


def _loss_scale_table(verdict: dict[str, Any]) -> list[str]:
    s = verdict["settings"]["scale"]
    lines = [
        f"| case | lr | distance lr·{s:g} vs loss·{s:g} | × threshold | verdict | expected | "
        f"loss·{s:g} vs baseline | lr·{s:g} vs baseline | test acc baseline / lr·{s:g} / loss·{s:g} | "
        f"test loss baseline / lr·{s:g} / loss·{s:g} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in verdict["cases"]:
        r = c["runs"]
        acc = " / ".join(_fmt(r[v].get("test_acc"), ".4f") for v in ("baseline", "lr_scaled", "loss_scaled"))
        loss = " / ".join(_fmt(r[v].get("test_loss"), ".4g") for v in ("baseline", "lr_scaled", "loss_scaled"))
        lines.append(
            f"| {c['case']} | {c['lr']:g} | {_fmt(c['distance'])} | {_fmt(c['times_threshold'], '.2g')} | "
            f"**{c['verdict']}** | {c['expected']} | {_fmt(c['distance_loss_scaled_to_baseline'])} | "
            f"{_fmt(c['distance_lr_scaled_to_baseline'])} | {acc} | {loss} |"
        )
    return lines


def _grad_accumulation_table(verdict: dict[str, Any]) -> list[str]:
    s = verdict["settings"]
    b, k = s["micro_batch"], s["accumulate"]
    lines = [
        f"B = {b}, k = {k}: {k} accumulated micro-batches of {b} against one batch of {k * b}.",
        "",
        "| case | distance | × threshold | verdict | expected | examples per epoch | "
        "test acc accumulated / large | test loss accumulated / large |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in verdict["cases"]:
        r = c["runs"]
        acc = " / ".join(_fmt(r[v].get("test_acc"), ".4f") for v in ("accumulated", "large_batch"))
        loss = " / ".join(_fmt(r[v].get("test_loss"), ".4g") for v in ("accumulated", "large_batch"))
        lines.append(
            f"| {c['case']} | {_fmt(c['distance'])} | {_fmt(c['times_threshold'], '.2g')} | **{c['verdict']}** | "
            f"{c['expected']} | {c['examples_per_epoch']} of {c['train_examples']} | {acc} | {loss} |"
        )
    return lines


def plot_distances(verdict: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = verdict["cases"]
    floor = 1e-18  # an exact 0 cannot sit on a log axis
    values = [max(c["distance"], floor) for c in cases]
    colors = ["tab:green" if c["verdict"] == EQUIVALENT else "tab:red" for c in cases]
    fig, ax = plt.subplots(figsize=(1.2 * len(cases) + 3, 4))
    ax.bar([c["case"] for c in cases], values, color=colors)
    ax.axhline(verdict["threshold"], color="black", linestyle="--", label=f"threshold {verdict['threshold']:g}")
    ax.set_yscale("log")
    ax.set_ylabel("relative parameter distance")
    ax.set_title(verdict["question"], fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


# --- running a study ----------------------------------------------------------------------------------------


def run_study(cfg: DictConfig, output_dir: Path | None = None) -> dict[str, Any]:
    """Measure, decide, write verdict.json, report.md and distance.png, and log them to the verdict run."""
    if cfg.kind not in MEASURES:
        raise ConfigError(f"study {cfg.name}: unknown kind '{cfg.kind}'. Kinds: {', '.join(MEASURES)}.")
    output_dir = Path(output_dir or results_dir(cfg.name))
    client = MlflowClient(resolve_tracking_uri())
    experiment = f"study-{cfg.name}"
    commit, dirty = git_state()
    run = client.create_run(
        experiment_id(client, experiment),
        run_name=f"verdict-{cfg.name}" + (f"-{cfg.preset}" if cfg.preset else ""),
        tags={TAG_PREFIX + "kind": KIND, TAG_PREFIX + "study": cfg.name, TAG_PREFIX + "version": optbench.__version__,
              TAG_PREFIX + "git_commit": commit, TAG_PREFIX + "git_dirty": str(dirty).lower(),
              TAG_PREFIX + "preset": str(cfg.preset)},
    )  # fmt: skip
    run_id = run.info.run_id
    with ends_run(client, run_id):
        params = {k: str(v)[:6000] for k, v in flatten(cfg).items() if not k.startswith(("presets", "notes"))}
        log_batched(client, run_id, params=params)
        with tempfile.TemporaryDirectory(prefix=f"optbench-study-{cfg.name}-") as workdir:
            cases = MEASURES[cfg.kind](cfg, Runner(cfg, run_id, Path(workdir)))
        verdict = build_verdict(cfg, cases)
        verdict["mlflow"] = {"experiment": experiment, "run_id": run_id}
        output_dir.mkdir(parents=True, exist_ok=True)
        plot_distances(verdict, output_dir / "distance.png")
        write_text(output_dir / "verdict.json", json.dumps(verdict, indent=2) + "\n")
        write_text(output_dir / "report.md", render_report(verdict, "distance.png"))
        now = int(time.time() * 1000)
        metrics = [Metric(f"distance/{c['case']}", c["distance"], now, 0) for c in cases]
        metrics += [Metric(f"equivalent/{c['case']}", float(c["verdict"] == EQUIVALENT), now, 0) for c in cases]
        client.log_batch(run_id, metrics=metrics, tags=[RunTag(TAG_PREFIX + "verdict", verdict["summary"][:5000])])
        for name in ("verdict.json", "report.md", "distance.png"):
            client.log_artifact(run_id, str(output_dir / name))
    return verdict


def last_verdict(name: str) -> dict[str, Any] | None:
    path = results_dir(name) / "verdict.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def list_studies(console: Console | None = None) -> None:
    table = Table(title="optbench claim studies", show_lines=True)
    for column in ("Study", "Question", "Last verdict"):
        table.add_column(column)
    for name in study_names():
        cfg = OmegaConf.load(STUDY_DIR / f"{name}.yaml")
        verdict = last_verdict(name)
        if verdict is None:
            shown = "not run yet"
        else:
            preset = f" [preset {verdict['preset']}]" if verdict.get("preset") else ""
            shown = f"{verdict['summary']}{preset}"
        table.add_row(Text(name), Text(str(cfg.get("question", ""))), Text(shown))
    if console is None:  # a pipe gets wide lines rather than cells cut to fit 80 columns
        console = Console() if Console().is_terminal else Console(width=200)
    console.print(table)


def print_verdict(verdict: dict[str, Any], output_dir: Path) -> None:
    console = Console() if Console().is_terminal else Console(width=200)
    table = Table(title=f"{verdict['study']}: {verdict['question']}")
    for column in ("Case", "Distance", "Threshold", "Verdict", "Expected"):
        table.add_column(column)
    for c in verdict["cases"]:
        table.add_row(c["case"], f"{c['distance']:.3g}", f"{verdict['threshold']:g}", c["verdict"], str(c["expected"]))
    console.print(table)
    console.print(Text(f"Report: {output_dir / 'report.md'} (MLflow run {verdict['mlflow']['run_id']})"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="optbench-study", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="each study's question and last verdict")
    run = commands.add_parser("run", help="run a study and write its verdict and report")
    run.add_argument("name", help="a study: " + ", ".join(study_names()))
    run.add_argument("--preset", help="merge presets.<PRESET> of the study's config (e.g. test)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a key of the study's config (repeatable), e.g. --set steps=20")  # fmt: skip
    run.add_argument("--output-dir", type=Path, help="where to write the results (default pipelines/<name>/results)")
    run.add_argument("--no-params", action="store_true", help="ignore pipelines/<name>/params.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "list":
            list_studies()
            return
        cfg = load_study(args.name, args.preset, args.overrides, params=not args.no_params)
        output_dir = args.output_dir or results_dir(args.name)
        verdict = run_study(cfg, output_dir)
    except OptbenchError as err:
        fail(err)
    print_verdict(verdict, output_dir)


if __name__ == "__main__":
    main()
