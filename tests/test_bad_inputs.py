"""Bad input to every command: one paragraph on stderr, no traceback, a non-zero exit (2 for the errors
optbench finds itself, Hydra's own 1 for an option that does not exist) and no MLflow run logged.

Each case is (command, arguments, a phrase the message must hold). Files a case needs are made in the
test's folder: {good_best}, {corrupt} and so on are replaced by their paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent
TRAIN = ["trainer=fast", "data=digits", "model=mlp"]
HYDRA = "hydra"  # marks a case Hydra itself refuses (exit status 1)

CASES: dict[str, tuple[str, list[str], str] | tuple[str, list[str], str, str]] = {
    # --- optbench-train: options and keys
    "unknown optimizer": ("train", ["optimizer=adamm"], "optimizer/adamm", HYDRA),
    "unknown scheduler": ("train", ["scheduler=cosin"], "cosine", HYDRA),
    "unknown precision": ("train", ["precision=float8"], "precision/float8", HYDRA),
    "unknown key": ("train", ["optimizer.lrr=0.1"], "optimizer.lrr", HYDRA),
    "unknown model key added with +": ("train", ["+model.hiden=3"], "has no setting hiden"),
    "unknown data key added with +": ("train", ["+data.foo=1"], "has no setting foo"),
    "unknown scheduler key added with +": ("train", ["+scheduler.gama=0.5"], "has no setting gama"),
    "unknown trainer key added with +": ("train", ["+trainer.bogus_flag=1"], "trainer has no setting bogus_flag"),
    "misspelt pytorch-optimizer setting": ("train", ["optimizer=lion", "+optimizer.beta=0.9"], "no setting beta"),
    "misspelt torch.optim setting": ("train", ["optimizer=adam", "+optimizer.betaz=0.9"], "optimizer=adam rejects"),
    # --- values out of range
    "negative learning rate": ("train", ["optimizer.lr=-0.1"], "optimizer.lr must be a positive"),
    "zero learning rate": ("train", ["optimizer.lr=0"], "optimizer.lr must be a positive"),
    "infinite learning rate": ("train", ["optimizer.lr=inf"], "optimizer.lr must be a positive"),
    "text learning rate": ("train", ["optimizer.lr=abc"], "optimizer.lr must be a positive"),
    "momentum above one": ("train", ["optimizer=momentum", "optimizer.momentum=2"], "optimizer.momentum must be in"),
    "beta2 of one": ("train", ["optimizer=adam", "optimizer.betas=[0.9,1.0]"], "optimizer.betas must be"),
    "zero eps": ("train", ["optimizer=adam", "optimizer.eps=0"], "optimizer.eps must be"),
    "negative weight decay": ("train", ["optimizer.weight_decay=-1"], "optimizer.weight_decay must be"),
    "dropout of two": ("train", ["model.dropout=2"], "model.dropout must be in [0, 1)"),
    "negative hidden width": ("train", ["model.hidden=[-5]"], "model.hidden must be"),
    "validation fraction above one": ("train", ["data.val_fraction=1.5"], "data.val_fraction must be a fraction"),
    "zero test fraction": ("train", ["data.test_fraction=0"], "data.test_fraction must be a fraction"),
    "zero batch size": ("train", ["batch_size=0"], "batch_size must be a positive integer"),
    "text batch size": ("train", ["batch_size=abc"], "batch_size must be a positive integer"),
    "negative seed": ("train", ["seed=-1"], "seed must be a non-negative integer"),
    "zero loss scale": ("train", ["loss_scale=0"], "loss_scale must be a positive number"),
    "no run length": ("train", ["trainer.max_epochs=0", "trainer.max_steps=-1"], "Set trainer.max_epochs"),
    "negative batch limit": ("train", ["trainer.limit_train_batches=-1"], "trainer.limit_train_batches must be"),
    "zero logging interval": ("train", ["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps must be"),
    "zero accumulation": ("train", ["trainer.accumulate_grad_batches=0"], "accumulate_grad_batches must be"),
    "negative clipping": ("train", ["trainer.gradient_clip_val=-1"], "gradient_clip_val must be"),
    "unknown clipping algorithm": (
        "train",
        ["trainer.gradient_clip_val=1", "trainer.gradient_clip_algorithm=foo"],
        "gradient_clip_algorithm must be norm or value",
    ),
    "unknown schedule interval": ("train", ["scheduler.interval=hour"], "scheduler.interval must be step or epoch"),
    "growing step schedule": ("train", ["scheduler=step", "scheduler.gamma=2"], "scheduler.gamma must be in"),
    "warmup longer than the run": (
        "train",
        ["scheduler=warmup_cosine", "scheduler.warmup_fraction=1.5"],
        "scheduler.warmup_fraction must be",
    ),
    "one-cycle without a warm phase": ("train", ["scheduler=onecycle", "scheduler.pct_start=0"], "pct_start must be"),
    "plateau without a metric": ("train", ["scheduler=plateau", "scheduler.monitor=null"], "monitor"),
    "no DDP processes": ("train", ["strategy=ddp_spawn", "strategy.devices=0"], "strategy.devices must be"),
    "zero checkpoint interval": ("train", ["checkpoint.every_n_epochs=0"], "checkpoint.every_n_epochs must be"),
    # --- combinations
    "fp16 with L-BFGS": ("train", ["optimizer=lbfgs", "precision=16-mixed"], "L-BFGS"),
    "L-BFGS with accumulation": ("train", ["optimizer=lbfgs", "trainer.accumulate_grad_batches=2"], "accumulate"),
    "L-BFGS with clipping": ("train", ["optimizer=lbfgs", "trainer.gradient_clip_val=1"], "gradient clipping"),
    "model that does not fit the data": ("train", ["data=regression", "model=cnn"], "use model=linear"),
    "torchvision dataset missing offline": ("train", ["data=cifar10", "model=cnn"], "cifar-10-batches-py"),
    # --- references that would run code
    "optimizer class outside torch.optim": ("train", ["optimizer._target_=collections.OrderedDict"], "outside the"),
    "a process as optimizer": ("train", ["optimizer._target_=subprocess.Popen"], "outside the modules"),
    "tuned result setting a class": ("train", ["optimizer=adam", "best={evil_best}"], "may not set"),
    "tuned result setting a missing key": ("train", ["optimizer=adam", "best={unknown_key_best}"], "may not set"),
    # --- files
    "unwritable metrics file": ("train", ["metrics_path=/proc/optbench/metrics.json"], "cannot write"),
    "missing tuning result": ("train", ["best=/nonexistent/best.json"], "cannot read the tuning result"),
    "corrupt tuning result": ("train", ["best={corrupt}"], "cannot read the tuning result"),
    "tuning result of another optimizer": ("train", ["optimizer=sgd", "best={good_best}"], "tuned for optimizer=adam"),
    "tuning result without settings": ("train", ["optimizer=adam", "best={empty_best}"], "no best_params"),
    "missing prepared split": ("train", ["data.prepared=/nonexistent/digits.pt"], "no such file"),
    "corrupt prepared split": ("train", ["data.prepared={corrupt}"], "not a readable split"),
    "prepared split of something else": ("train", ["data.prepared={tensor_file}"], "not the digits split"),
    "missing checkpoint": ("train", ["resume=/nonexistent/last.ckpt"], "no such checkpoint file"),
    "corrupt checkpoint": ("train", ["resume={corrupt}"], "not a readable checkpoint"),
    "unresolvable interpolation": ("train", ["metrics_path=${oc.env:OPTBENCH_NO_SUCH_VARIABLE}"], "cannot be resolved"),
    "store in a missing folder": ("train", ["logger.tracking_uri=sqlite:////nonexistent/mlflow.db"], "does not exist"),
    "unreachable tracking server": ("train", ["MLFLOW_TRACKING_URI=http://127.0.0.1:9"], "cannot reach the MLflow"),
    # --- optbench-tune
    "no trials": ("tune", ["tune.n_trials=0"], "n_trials must be an integer"),
    "no workers": ("tune", ["tune.n_jobs=0"], "n_jobs must be an integer"),
    "unknown direction": ("tune", ["tune.direction=up"], "tune.direction must be"),
    "inverted search range": ("tune", ["tune.search_space.lr.low=5.0"], "empty or inverted range"),
    "searching a missing key": ("tune", ["tune.search_space.lr.key=optimizer.lrr"], "optimizer.lrr"),
    "unknown sampler": ("tune", ["tune.sampler.name=grid"], "Valid samplers"),
    "unknown pruner": ("tune", ["tune.pruner.name=foo"], "Valid pruners"),
    "storage in a missing folder": ("tune", ["tune.storage=sqlite:////nonexistent/optuna.db"], "does not exist"),
    "DDP inside tuning": ("tune", ["strategy=ddp"], "cannot run inside a tuning loop"),
    "bad value inside tuning": ("tune", ["optimizer.momentum=2", "optimizer=momentum"], "optimizer.momentum"),
    # --- optbench-compare (the store exists and holds nothing)
    "unknown experiment": ("compare", ["experiment=nope"], "no MLflow experiment named nope"),
    "confidence above one": ("compare", ["confidence=1.5"], "confidence must lie strictly between 0 and 1"),
    "target above one": ("compare", ["target=2"], "target must be a validation accuracy"),
    "empty optimizer list": ("compare", ["optimizers=[]"], "optimizers is an empty list"),
    "missing store": ("compare", ["tracking_uri=sqlite:////nonexistent/mlflow.db"], "no MLflow store"),
    "unreadable params file": ("compare", ["params_file=/nonexistent/params.yaml"], "cannot read it"),
    # --- optbench-study
    "unknown study": ("study", ["run", "nosuch"], "Unknown study 'nosuch'"),
    "unknown preset": ("study", ["run", "loss_vs_lr_scale", "--preset", "nosuch"], "has no preset 'nosuch'"),
    "override without a value": ("study", ["run", "loss_vs_lr_scale", "--set", "garbage"], "missing EQUAL"),
    "override of a missing key": ("study", ["run", "loss_vs_lr_scale", "--set", "stepz=3"], "Could not override"),
    "unparseable override": ("study", ["run", "loss_vs_lr_scale", "--set", "seeds=[1,"], "no viable alternative"),
    "text step count": ("study", ["run", "loss_vs_lr_scale", "--set", "steps=abc"], "steps must be a positive"),
    "unknown case": ("study", ["run", "loss_vs_lr_scale", "--set", "run_cases=[nosuch]"], "unknown cases nosuch"),
    # --- optbench-prepare and the finders
    "prepare an unknown dataset": ("prepare", ["data=nosuch"], "data/nosuch", HYDRA),
    "prepare with a bad fraction": ("prepare", ["data=digits", "data.val_fraction=0"], "data.val_fraction"),
    "range test of L-BFGS": ("lr-find", [*TRAIN, "optimizer=lbfgs"], "cannot be range-tested"),
    "batch-size search over DDP": (
        "bs-find",
        [*TRAIN, "strategy=ddp_spawn", "strategy.devices=2"],
        "runs in one process",
    ),
}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    made = {
        "good_best": {"optimizer": "adam", "best_params": {"optimizer.lr": 0.01}, "searched": ["optimizer.lr"]},
        "evil_best": {"optimizer": "adam", "best_params": {"optimizer._target_": "subprocess.Popen"}},
        "unknown_key_best": {"optimizer": "adam", "best_params": {"optimizer.lrr": 0.1}},
        "empty_best": {"optimizer": "adam"},
    }
    paths = {}
    for name, payload in made.items():
        paths[name] = str(tmp_path / f"{name}.json")
        Path(paths[name]).write_text(json.dumps(payload))
    paths["corrupt"] = str(tmp_path / "corrupt.bin")
    Path(paths["corrupt"]).write_bytes(b"\x00not a file optbench wrote\xff" * 10)
    paths["tensor_file"] = str(tmp_path / "tensor.pt")
    torch.save({"name": "mnist5k"}, paths["tensor_file"])
    return paths


def _command(name: str) -> list[str]:
    return [str(BIN / f"optbench-{name}")]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_paragraph_a_nonzero_exit_and_no_run(case, tmp_path, files):
    command, args, phrase, *hydra = CASES[case]
    if case in ("fsdp without a GPU",) and torch.cuda.is_available():
        pytest.skip("a GPU is present: this input is valid here")
    store = tmp_path / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    args = [a.format(**files) if "{" in a and "${" not in a else a for a in args]
    env.update(dict(a.split("=", 1) for a in args if a.startswith("MLFLOW_")))
    args = [a for a in args if not a.startswith("MLFLOW_")]
    if command == "compare":
        MlflowClient(f"sqlite:///{store}").search_experiments()  # an existing, empty store
    if command in ("train", "tune"):
        args = [*TRAIN, "experiment=bad", *args]

    result = subprocess.run(
        [*_command(command), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )

    assert result.returncode == (1 if hydra else 2), result.stderr
    assert "Traceback" not in result.stderr
    assert phrase in result.stderr, f"{phrase!r} missing from: {result.stderr}"
    if store.exists():
        client = MlflowClient(f"sqlite:///{store}")
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not experiments or client.search_runs(experiments) == []  # nothing was logged


def test_the_table_covers_every_command_and_at_least_sixty_inputs():
    assert len(CASES) >= 60
    assert {case[0] for case in CASES.values()} == {
        "train",
        "tune",
        "compare",
        "study",
        "prepare",
        "lr-find",
        "bs-find",
    }
