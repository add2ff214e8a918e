"""What every claim study shares: its config, its runs, its verdict file and report, and the command line.

`optbench-study run <name>` merges, in this order, conf/study/<name>.yaml, pipelines/<name>/params.yaml (the
knobs its DVC stage tracks), a preset of the file (`--preset`) and `--set key=value` overrides. The study's
kind (a module of optbench.studies) measures: it trains runs in-process through optbench.train.train (one
MLflow run each, in the experiment study-<name>, nested under the study's verdict run), tunes cases with
optbench.tune.tune where optimizers are compared, and computes each case's verdict from the measured
numbers against the threshold in the config. run_study then writes verdict.json, report.md and the plot,
and logs them as artifacts of the verdict run (tag optbench.kind=study_verdict), which ends FINISHED,
FAILED or KILLED.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
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
# Tiny test-sized runs have fewer batches than Lightning's logging interval; nothing to act on.
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")

STUDY_DIR = Path(CONFIG_DIR) / "study"
PIPELINES_DIR = Path(CONFIG_DIR).parent / "pipelines"
KIND = "study_verdict"
REQUIRED_KEYS = ("name", "kind", "question", "claim", "measure", "threshold", "seed", "train")
# Keys that describe the study rather than set it up: left out of verdict.json's `settings`.
DESCRIPTIVE_KEYS = ("name", "kind", "question", "claim", "measure", "threshold", "cases", "claims", "notes",
                    "presets", "preset")  # fmt: skip
# Verdict words that mean "the claim holds" (logged as holds/<case> = 1) and "it does not" (0).
HOLDS = ("equivalent", "supported", "as claimed")
FAILS = ("not equivalent", "refuted", "not as claimed")


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
        cfg = _merge(cfg, knobs, str(params_file))
    if preset is not None:
        presets = cfg.get("presets") or {}
        if preset not in presets:
            raise ConfigError(f"Study {name} has no preset '{preset}'. Presets: {', '.join(presets) or 'none'}.")
        cfg = _merge(cfg, presets[preset], f"preset {preset}")
    if overrides:
        try:
            dotlist = OmegaConf.from_dotlist(list(overrides))
        except (OmegaConfBaseException, yaml.YAMLError) as err:
            problem = " ".join(str(err).split())
            raise ConfigError(f"study {name}: cannot parse --set {' '.join(overrides)}: {problem}") from None
        cfg = _merge(cfg, dotlist, "--set " + " ".join(overrides))
    missing = [key for key in REQUIRED_KEYS if key not in cfg]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}.")
    if cfg.get("steps") is not None and not (isinstance(cfg.steps, int) and cfg.steps >= 1):
        raise ConfigError(f"study {name}: steps must be a positive integer, got {cfg.steps!r}.")
    if not (isinstance(cfg.threshold, (int, float)) and cfg.threshold >= 0):
        raise ConfigError(f"study {name}: threshold must be a number >= 0, got {cfg.threshold!r}.")
    cfg.preset = preset
    return cfg


def _merge(cfg: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as err:  # e.g. a list given where the study has a mapping
        first = str(err).splitlines()[0]
        raise ConfigError(f"study {cfg.name}: {source} does not fit the study's config: {first}.") from None


def selected_cases(cfg: DictConfig, key: str = "optimizers") -> list[str]:
    """The cases to run: the list under `key` (a knob of params.yaml) if given, else every case."""
    names = list(cfg.get(key) or cfg.cases.keys())
    unknown = [n for n in names if n not in cfg.cases]
    if unknown:
        raise ConfigError(f"study {cfg.name}: unknown cases {', '.join(unknown)}. Cases: {', '.join(cfg.cases)}.")
    return names


def seeds_of(cfg: DictConfig) -> list[int]:
    seeds = list(cfg.get("seeds") or [cfg.seed])
    if not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"study {cfg.name}: seeds must be integers, got {seeds}.")
    return seeds


# --- statistics ---------------------------------------------------------------------------------------------


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and t-interval of the finite values (bounds NaN below two values)."""
    from optbench.compare import mean_ci as _mean_ci

    mean, low, high, n = _mean_ci(values, confidence)
    return {"mean": mean, "low": low, "high": high, "n": n}


def difference_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """mean(a) − mean(b) with Welch's t-interval (unequal variances); a zero-width interval when both
    samples are constant (deterministic runs), NaN bounds when either has fewer than two values."""
    from scipy import stats

    x = np.asarray([v for v in a if np.isfinite(v)], dtype=float)
    y = np.asarray([v for v in b if np.isfinite(v)], dtype=float)
    if len(x) == 0 or len(y) == 0:
        return {"diff": math.nan, "low": math.nan, "high": math.nan}
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return {"diff": diff, "low": math.nan, "high": math.nan}
    if x.var() == 0 and y.var() == 0:
        return {"diff": diff, "low": diff, "high": diff}
    ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(confidence)
    return {"diff": diff, "low": float(ci.low), "high": float(ci.high)}


def advantage_verdict(ci: dict[str, float], margin: float) -> str:
    """A claim "A is better than B by more than `margin`" judged on the interval of A's advantage:
    supported if the whole interval lies above the margin, refuted if none of it does (a tie refutes an
    advantage), else inconclusive."""
    if not (math.isfinite(ci["low"]) and math.isfinite(ci["high"])):
        return "inconclusive"
    if ci["low"] > margin:
        return "supported"
    if ci["high"] <= margin:
        return "refuted"
    return "inconclusive"


def equivalence_verdict(ci: dict[str, float], margin: float) -> str:
    """A claim "A and B are the same within ±margin" (two one-sided tests): supported if the interval of the
    difference lies inside (−margin, margin), refuted if it lies wholly outside, else inconclusive."""
    if not (math.isfinite(ci["low"]) and math.isfinite(ci["high"])):
        return "inconclusive"
    if -margin < ci["low"] and ci["high"] < margin:
        return "supported"
    if ci["low"] > margin or ci["high"] < -margin:
        return "refuted"
    return "inconclusive"


def advantage_ci(a: Sequence[float], b: Sequence[float], lower_is_better: bool, confidence: float) -> dict[str, float]:
    """The interval of A's advantage over B: mean(a) − mean(b), negated where lower values are better."""
    sign = -1.0 if lower_is_better else 1.0
    return difference_ci([sign * v for v in a], [sign * v for v in b], confidence)


def judge_interval(cfg: DictConfig, claim: DictConfig, ci: dict[str, float]) -> dict[str, Any]:
    """A claim's test (`advantage` by default, or `equivalence`), its margin (default: the study's
    threshold) and the verdict the interval `ci` of the claimed-better side's advantage gives."""
    margin = float(claim.get("margin", cfg.threshold))
    test = claim.get("test", "advantage")
    verdict = equivalence_verdict(ci, margin) if test == "equivalence" else advantage_verdict(ci, margin)
    return {"test": test, "margin": margin, "verdict": verdict}


# --- running ------------------------------------------------------------------------------------------------

# Final metrics kept per run in verdict.json (the rest stays in MLflow).
FINAL_METRICS = {
    "test_acc": "test/acc", "test_loss": "test/loss", "val_acc_best": "val/acc_best", "val_loss": "val/loss",
    "train_acc": "train/acc", "train_loss": "train/loss", "steps": "train/steps", "train_s": "time/train_s",
    "diverged": "train/diverged", "dist_to_opt": "train/dist_to_opt", "skipped_steps": "amp/skipped_steps",
    "loss_scale": "amp/loss_scale",
}  # fmt: skip


@dataclass
class Study:
    """One study being run: its config, its verdict run in MLflow and a scratch directory for its runs."""

    cfg: DictConfig
    client: MlflowClient
    parent_run_id: str
    workdir: Path
    n_runs: int = field(default=0)

    @property
    def experiment(self) -> str:
        return f"study-{self.cfg.name}"

    def train(
        self,
        case: str,
        variant: str,
        overrides: Sequence[str],
        *,
        keep_params: bool = False,
        allow_diverged: bool = False,
        callbacks: Sequence[Any] = (),
    ) -> dict[str, Any]:
        """Train one run (the study's `train` overrides, then `overrides`) and return its final metrics;
        with `keep_params`, also its final state_dict under "state" (not written to verdict.json)."""
        from optbench.train import train  # Lightning is slow to import; `list` does not need it

        for noisy in ("lightning.pytorch", "lightning.fabric", "optbench.train"):  # banners, once per run
            logging.getLogger(noisy).setLevel(logging.WARNING)
        stem = f"{case}-{variant}"
        steps = [f"trainer.max_steps={self.cfg.steps}", "trainer.max_epochs=-1"] if self.cfg.get("steps") else []
        train_cfg = compose_config(
            *self.cfg.train,
            f"seed={self.cfg.seed}",
            *steps,  # the run's length is max_steps
            *overrides,
            f"experiment={self.experiment}",
            f"metrics_path={self.workdir / (stem + '.json')}",
            f"params_path={self.workdir / (stem + '.pt')}" if keep_params else "params_path=null",
        )
        tags = {
            "mlflow.runName": stem,
            "mlflow.parentRunId": self.parent_run_id,
            TAG_PREFIX + "study": self.cfg.name,
            TAG_PREFIX + "study_case": case,
            TAG_PREFIX + "study_variant": variant,
        }
        log.info("Study %s: %s (%s)", self.cfg.name, stem, " ".join(overrides))
        metrics = train(train_cfg, tags=tags, callbacks=callbacks)
        self.n_runs += 1
        if metrics.get("train/diverged", 0.0) > 0 and not allow_diverged:
            raise OptbenchError(f"study {self.cfg.name}: run {stem} diverged; lower its learning rate.")
        final: dict[str, Any] = {key: metrics[name] for key, name in FINAL_METRICS.items() if name in metrics}
        final["run_id"] = metrics.get("run_id")
        if keep_params:
            final["state"] = torch.load(self.workdir / (stem + ".pt"), map_location="cpu", weights_only=True)
        return final

    def tune(self, case: str, overrides: Sequence[str]) -> dict[str, Any]:
        """Tune one case with the study's equal budget (`tune`: optbench-tune overrides, the same for every
        case): a fresh Optuna study in the scratch directory, nested under the verdict run in MLflow.
        Returns best.json's content plus every trial's sampled settings, value and outcome."""
        import optuna

        from optbench.tune import tune

        name = f"{self.cfg.name}-{case}"
        storage = f"sqlite:///{self.workdir / ('optuna-' + case + '.db')}"
        tune_cfg = compose_config(
            *self.cfg.train,
            f"seed={self.cfg.get('tune_seed', self.cfg.seed)}",
            *overrides,
            *self.cfg.tune,
            f"experiment={self.experiment}",
            f"tune.storage={storage}",
            f"tune.study_name={name}",
            f"tune.output_dir={self.workdir / 'tune'}",
            config_name="tune",
        )
        summary = tune(tune_cfg)
        study = optuna.load_study(study_name=name, storage=storage)
        parent = study.user_attrs.get("mlflow_parent_run_id")
        if parent:
            self.client.set_tag(parent, "mlflow.parentRunId", self.parent_run_id)
        summary["trials"] = [
            {"params": dict(t.params), "value": t.value, "outcome": t.user_attrs.get("outcome", t.state.name.lower())}
            for t in study.get_trials(deepcopy=False)
        ]
        for key in ("output_dir", "study_name"):
            summary.pop(key, None)
        self.n_runs += len(summary["trials"])
        return summary


class StudyKind(Protocol):
    """One kind of measurement (a module of optbench.studies)."""

    plot_name: str  # the figure run_study writes next to report.md

    def measure(self, study: Study) -> dict[str, Any]:
        """Run the study; return {"cases": [{"case", "verdict", "value", ...}], ...}."""

    def rule(self, cfg: DictConfig) -> str:
        """How a verdict follows from the numbers and the threshold, in one sentence."""

    def report(self, verdict: dict[str, Any]) -> list[str]:
        """The report's Markdown tables."""

    def plot(self, verdict: dict[str, Any], path: Path) -> None: ...


def kinds() -> dict[str, StudyKind]:
    from optbench.studies import batch_size, exact, memory, precision, sweeps, tuned

    return {**exact.KINDS, **tuned.KINDS, **sweeps.KINDS, **batch_size.KINDS, **precision.KINDS, **memory.KINDS}


# --- verdict and report -------------------------------------------------------------------------------------


def build_verdict(cfg: DictConfig, kind: StudyKind, measured: dict[str, Any]) -> dict[str, Any]:
    cases = measured["cases"]
    for case in cases:
        if "expected" in case:
            case["as_expected"] = None if case["expected"] is None else case["verdict"] == case["expected"]
    by_verdict: dict[str, list[str]] = {}
    for case in cases:
        by_verdict.setdefault(case["verdict"], []).append(case["case"])
    summary = "; ".join(f"{word}: {', '.join(names)}" for word, names in by_verdict.items())
    settings = {
        key: OmegaConf.to_container(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key not in DESCRIPTIVE_KEYS
    }
    expected = [c for c in cases if c.get("expected") is not None]
    return {
        "study": cfg.name,
        "question": cfg.question,
        "claim": cfg.claim,
        "measure": cfg.measure,
        "threshold": float(cfg.threshold),
        "rule": kind.rule(cfg),
        "preset": cfg.preset,
        "settings": settings,
        **{key: value for key, value in measured.items() if key != "cases"},
        "cases": cases,
        "verdicts": {c["case"]: c["verdict"] for c in cases},
        "values": {c["case"]: c["value"] for c in cases},  # flat numbers for `dvc metrics show`
        "summary": summary,
        "as_expected": sum(bool(c["as_expected"]) for c in expected) if expected else None,
        "n_expected": len(expected),
        "n_cases": len(cases),
        "skipped": measured.get("skipped", []),
        "notes": list(cfg.get("notes") or []),
    }


def fmt(value: Any, spec: str = ".3g") -> str:
    """A number for a report cell; n/a for a missing or NaN one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def fmt_ci(stat: dict[str, float], spec: str = ".4f") -> str:
    """mean [low, high] (or just the mean when there is no interval)."""
    if not math.isfinite(stat.get("low", math.nan)):
        return fmt(stat.get("mean", stat.get("diff")), spec)
    return f"{fmt(stat.get('mean', stat.get('diff')), spec)} [{fmt(stat['low'], spec)}, {fmt(stat['high'], spec)}]"


def render_report(verdict: dict[str, Any], kind: StudyKind) -> str:
    s = verdict["settings"]
    expected = (
        f" As predicted: {verdict['as_expected']} of {verdict['n_expected']} cases."
        if verdict["n_expected"] else ""
    )  # fmt: skip
    runs = f"; runs: `{' '.join(s['train'])}`" if s.get("train") else ""
    seeds = f"seeds {s['seeds']}" if s.get("seeds") else f"seed {s['seed']}"
    lines = [
        f"# Study {verdict['study']}: {verdict['question']}",
        "",
        f"**Claim.** {verdict['claim']}",
        "",
        f"**Measure.** {verdict['measure']}.",
        "",
        f"**Threshold.** {verdict['rule']} (threshold {verdict['threshold']:g}).",
        "",
        f"**Verdict.** {verdict['summary']}.{expected}",
        "",
        f"Settings: {seeds}" + (f", steps {s['steps']}" if s.get("steps") else "")
        + (f", preset {verdict['preset']}" if verdict["preset"] else "") + f"{runs}.",
        "",
        *kind.report(verdict),
        "",
        f"![{kind.plot_name}]({kind.plot_name})",
        "",
    ]
    if verdict["skipped"]:
        lines += ["## Not measured on this machine", ""]
        lines += [f"- **{item['what']}**: {item['why']}" for item in verdict["skipped"]] + [""]
    if verdict["notes"]:
        lines += ["## Notes", ""] + [f"- {note}" for note in verdict["notes"]] + [""]
    lines.append(
        f"MLflow: experiment `{verdict['mlflow']['experiment']}`, verdict run `{verdict['mlflow']['run_id']}`."
    )
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (studies run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same numbers, same bytes
    pyplot().close(fig)


# --- running a study ----------------------------------------------------------------------------------------


def run_study(cfg: DictConfig, output_dir: Path | None = None) -> dict[str, Any]:
    """Measure, decide, write verdict.json, report.md and the plot, and log them to the verdict run."""
    all_kinds = kinds()
    if cfg.kind not in all_kinds:
        raise ConfigError(f"study {cfg.name}: unknown kind '{cfg.kind}'. Kinds: {', '.join(all_kinds)}.")
    kind = all_kinds[cfg.kind]
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
    started = time.monotonic()
    with ends_run(client, run_id):
        params = {k: str(v)[:6000] for k, v in flatten(cfg).items() if not k.startswith(("presets", "notes"))}
        log_batched(client, run_id, params=params)
        with tempfile.TemporaryDirectory(prefix=f"optbench-study-{cfg.name}-") as workdir:
            study = Study(cfg, client, run_id, Path(workdir))
            measured = kind.measure(study)
        verdict = build_verdict(cfg, kind, measured)
        verdict["mlflow"] = {"experiment": experiment, "run_id": run_id, "runs": study.n_runs}
        output_dir.mkdir(parents=True, exist_ok=True)
        kind.plot(verdict, output_dir / kind.plot_name)
        write_text(output_dir / "verdict.json", json.dumps(verdict, indent=2, allow_nan=True) + "\n")
        write_text(output_dir / "report.md", render_report(verdict, kind))
        now = int(time.time() * 1000)
        metrics = [Metric(f"value/{c['case']}", float(c["value"]), now, 0) for c in verdict["cases"]
                   if c["value"] is not None]  # fmt: skip
        metrics += [Metric(f"holds/{c['case']}", float(c["verdict"] in HOLDS), now, 0)
                    for c in verdict["cases"] if c["verdict"] in HOLDS + FAILS]  # fmt: skip
        metrics.append(Metric("study/minutes", (time.monotonic() - started) / 60, now, 0))
        log_batched(client, run_id, metrics=metrics)
        client.log_batch(run_id, tags=[RunTag(TAG_PREFIX + "verdict", verdict["summary"][:5000])])
        for name in ("verdict.json", "report.md", kind.plot_name):
            client.log_artifact(run_id, str(output_dir / name))
    return verdict


def last_verdict(name: str) -> dict[str, Any] | None:
    path = results_dir(name) / "verdict.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _console() -> Console:
    # A pipe gets wide lines rather than cells cut to fit 80 columns.
    return Console() if Console().is_terminal else Console(width=200)


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
    (console or _console()).print(table)


def print_verdict(verdict: dict[str, Any], output_dir: Path) -> None:
    console = _console()
    table = Table(title=f"{verdict['study']}: {verdict['question']}")
    for column in ("Case", "Value", "Verdict", "Expected"):
        table.add_column(column)
    for c in verdict["cases"]:
        table.add_row(c["case"], fmt(c["value"]), c["verdict"], str(c.get("expected") or ""))
    console.print(table)
    console.print(Text(f"Rule: {verdict['rule']}."))
    console.print(Text(f"Report: {output_dir / 'report.md'} (MLflow run {verdict['mlflow']['run_id']})"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="optbench-study", description="optbench claim studies: measured verdicts")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="each study's question and last verdict")
    run = commands.add_parser("run", help="run a study and write its verdict and report")
    run.add_argument("name", help="a study: " + ", ".join(study_names()))
    run.add_argument("--preset", help="merge presets.<PRESET> of the study's config (e.g. test, gpu)")
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
