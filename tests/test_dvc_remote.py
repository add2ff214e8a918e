"""The DVC pipeline on a cluster and results that travel: the `launcher` knob of params.yaml, and a comparison's
outputs pushed to a DVC remote and pulled by a colleague in a fresh clone without retraining. Real git and DVC in
temporary folders; the remote is a local directory (as on a cluster's shared file system)."""

from __future__ import annotations

import filecmp
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from optbench.core.config import compose_config
from optbench.tuning.storage import is_sqlite

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# A pipeline of the project's shape, with commands that take milliseconds: a split (cached file), tuned settings
# per optimizer (cached folders), per-run metrics per optimizer x seed (cached files) and a report that lives in
# git (cache: false), as in the main dvc.yaml.
PIPELINE = """
stages:
  prepare:
    cmd: python -c "import os; os.makedirs('data/prepared', exist_ok=True); open('data/prepared/d.pt', 'wb').write(os.urandom(4096))"
    outs:
      - data/prepared/d.pt
  tune:
    foreach: ${optimizers}
    do:
      cmd: mkdir -p results/tune/${item} && python -c "import random; print(random.random())" > results/tune/${item}/best.json
      deps:
        - data/prepared/d.pt
      outs:
        - results/tune/${item}
  train:
    matrix:
      optimizer: ${optimizers}
      seed: ${seeds}
    cmd: mkdir -p results/train && python -c "import random; print(random.random())" > results/train/${item.optimizer}-s${item.seed}.json
    deps:
      - results/tune/${item.optimizer}/best.json
    outs:
      - results/train/${item.optimizer}-s${item.seed}.json
  compare:
    cmd: mkdir -p results/compare && cat results/train/*.json > results/compare/summary.json
    deps:
      - results/train
    outs:
      - results/compare:
          cache: false
"""
PARAMS = "optimizers: [sgd, adam]\nseeds: [0, 1]\n"


def sh(*cmd: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)}: {result.stdout}{result.stderr}"
    return result.stdout


def files_under(root: Path, *folders: str) -> list[Path]:
    return sorted(
        p.relative_to(root) for f in folders for p in (root / f).rglob("*") if p.is_file() and p.name != ".gitignore"
    )


@pytest.mark.slow
def test_a_colleague_pulls_every_result_byte_for_byte_and_nothing_reruns(tmp_path):
    origin, remote, clone = tmp_path / "origin", tmp_path / "remote", tmp_path / "clone"
    origin.mkdir()
    sh("git", "init", "-q", "-b", "main", cwd=origin)
    sh("git", "config", "user.email", "dev@optbench.invalid", cwd=origin)
    sh("git", "config", "user.name", "optbench", cwd=origin)
    sh("dvc", "init", "-q", cwd=origin)
    (origin / "dvc.yaml").write_text(PIPELINE)
    (origin / "params.yaml").write_text(PARAMS)
    sh("dvc", "repro", "-q", cwd=origin)
    sh("dvc", "remote", "add", "-d", "shared", str(remote), cwd=origin)  # as docs/cluster.md says
    sh("git", "add", "-A", cwd=origin)
    sh("git", "commit", "-q", "-m", "results", cwd=origin)
    sh("dvc", "push", "-q", cwd=origin)

    sh("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    sh("dvc", "pull", "-q", cwd=clone)

    assert "up to date" in sh("dvc", "status", cwd=clone)
    assert "Running stage" not in sh("dvc", "repro", cwd=clone)  # nothing retrained
    results = files_under(origin, "data", "results")
    assert len(results) == 1 + 2 + 4 + 1  # split, tuned settings, per-run metrics, report
    assert files_under(clone, "data", "results") == results
    _, mismatch, errors = filecmp.cmpfiles(origin, clone, [str(p) for p in results], shallow=False)
    assert mismatch == [] and errors == []


def _outputs(stage: dict) -> list[tuple[str, bool]]:
    """(path, cached) of each output of a dvc.yaml stage."""
    pairs = []
    for out in stage.get("outs", []):
        path, options = (out, {}) if isinstance(out, str) else next(iter(out.items()))
        pairs.append((path, (options or {}).get("cache", True)))
    return pairs


@pytest.mark.unit
def test_every_output_of_the_main_pipeline_travels_through_the_dvc_cache_or_git():
    # An output with cache: false is not pushed to a DVC remote: it reaches a colleague only if git tracks it.
    # (Paths are checked with their ${...} placeholders filled by a sample value: the rule is per pattern.)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    uncached = [path for stage in stages.values() for path, cached in _outputs(stage.get("do", stage)) if not cached]
    samples = [
        path.replace("${data}", "digits").replace("${item.optimizer}", "sgd").replace("${item.seed}", "0")
        for path in uncached
    ]
    ignored = subprocess.run(["git", "check-ignore", *samples], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert ignored == [], f"outputs with cache: false that git ignores never reach a fresh clone: {ignored}"


# --- the launcher knob: the same pipeline, run here or submitted to SLURM --------------------------------


def _stage_commands(tmp_path: Path, launcher: str) -> dict[str, str]:
    """The commands DVC renders from the main dvc.yaml with params.yaml's `launcher` set to `launcher`."""
    from dvc.repo import Repo

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "launcher": launcher}))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    sh("dvc", "init", "-q", "--no-scm", cwd=tmp_path)
    optimizer, seed = params["optimizers"][0], params["seeds"][0]
    repo = Repo(str(tmp_path))
    return {
        name: repo.stage.collect(f"{name}@{key}")[0].cmd
        for name, key in (("tune", optimizer), ("train", f"{optimizer}-{seed}"))
    }


def _overrides(cmd: str, program: str) -> list[str]:
    """The Hydra overrides `program` gets in a stage command (after its name, without -m)."""
    words = shlex.split(cmd)
    return [w for w in words[words.index(program) + 1 :] if w != "-m"]


@pytest.mark.unit
@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_the_launcher_knob_sends_tuning_workers_and_training_runs_through_the_chosen_launcher(tmp_path, launcher):
    cmds = _stage_commands(tmp_path, launcher)
    train = shlex.split(cmds["train"])
    assert train[train.index("optbench-train") + 1] == "-m"  # a one-job multirun: Hydra's launcher runs it
    train_cfg = compose_config(*_overrides(cmds["train"], "optbench-train"))
    assert f"hydra/launcher={launcher}" in train and train_cfg.metrics_path.startswith("results/train/")
    tune_cfg = compose_config(*_overrides(cmds["tune"], "optbench-tune"), config_name="tune")
    assert tune_cfg.tune.launcher == launcher
    assert not is_sqlite(tune_cfg.tune.storage)  # a file SLURM jobs on several nodes can share: the journal
    assert tune_cfg.tune.storage.startswith("journal://results/tune/")
