"""The SLURM launcher and provenance without a cluster: what a job reads from SLURM's environment, the tags a
run records, what deterministic CUDA needs, a site's settings file, and the refusal to launch without sbatch.
(The same paths against a real SLURM cluster are in tests/cluster/.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from optbench.cluster.gpu import CUBLAS_WORKSPACE, deterministic_cuda
from optbench.cluster.slurm import slurm_environment, world_size
from optbench.tracking.provenance import environment_tags

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent
ARRAY_TASK = {  # what SLURM sets in task 1 of array job 40 (per-task job id 42), two tasks on two nodes
    "SLURM_JOB_ID": "42",
    "SLURM_ARRAY_JOB_ID": "40",
    "SLURM_ARRAY_TASK_ID": "1",
    "SLURM_JOB_NODELIST": "gpu[01-02]",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NTASKS": "2",
    "SLURM_JOB_PARTITION": "debug",
    "SLURM_CLUSTER_NAME": "local",
    "HOME": "/root",
}


def test_slurm_environment_names_an_array_task_as_squeue_does() -> None:
    assert slurm_environment(ARRAY_TASK) == {
        "slurm_job_id": "40_1",
        "slurm_task_job_id": "42",
        "slurm_array_job_id": "40",
        "slurm_array_task_id": "1",
        "slurm_nodelist": "gpu[01-02]",
        "slurm_num_nodes": "2",
        "slurm_ntasks": "2",
        "slurm_partition": "debug",
        "slurm_cluster": "local",
    }


def test_a_plain_job_keeps_its_own_id() -> None:
    assert slurm_environment({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) == {
        "slurm_job_id": "7",
        "slurm_ntasks": "1",
    }


def test_outside_slurm_there_is_nothing_to_record() -> None:
    assert slurm_environment({"HOME": "/root", "WORLD_SIZE": "2"}) == {}
    assert world_size({"HOME": "/root"}) is None


def test_world_size_prefers_torch_over_slurm() -> None:
    assert world_size({"SLURM_NTASKS": "4"}) == 4
    assert world_size({"SLURM_NTASKS": "4", "WORLD_SIZE": "8"}) == 8


def test_provenance_tags_under_slurm() -> None:
    tags = environment_tags(ARRAY_TASK)
    assert tags["optbench.slurm_job_id"] == "40_1"
    assert tags["optbench.slurm_array_task_id"] == "1"
    assert tags["optbench.slurm_nodelist"] == "gpu[01-02]"
    assert tags["optbench.world_size"] == "2"
    assert tags["optbench.torch_version"] == torch.__version__
    assert ("optbench.gpu_model" in tags) == torch.cuda.is_available()  # GPU facts only where there is a GPU


def test_provenance_tags_outside_slurm_hold_no_slurm_key() -> None:
    tags = environment_tags({}, strategy={"name": "ddp_spawn", "devices": 2, "num_nodes": 3})
    assert not [key for key in tags if "slurm" in key]
    assert tags["optbench.world_size"] == "6"  # the Trainer's devices x num_nodes, before its ranks exist


def test_deterministic_cuda_sets_the_cublas_workspace_once() -> None:
    env: dict[str, str] = {}
    assert deterministic_cuda({"accelerator": "gpu", "deterministic": True}, env) == CUBLAS_WORKSPACE
    assert env == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    assert environment_tags(env)["optbench.cublas_workspace_config"] == ":4096:8"


def test_deterministic_cuda_keeps_a_users_value_and_leaves_cpu_runs_alone() -> None:
    env = {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    assert deterministic_cuda({"accelerator": "gpu", "deterministic": True}, env) == ":16:8"
    cpu: dict[str, str] = {}
    assert deterministic_cuda({"accelerator": "cpu", "deterministic": True}, cpu) is None
    assert deterministic_cuda({"accelerator": "gpu", "deterministic": False}, cpu) is None
    assert cpu == {}


def _hydra_config(*args: str, cwd: Path) -> dict:
    """The hydra node optbench-train composes for `args` (its --cfg hydra output); nothing runs."""
    out = subprocess.run(
        [BIN / "optbench-train", *args, "--cfg", "hydra"], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["hydra"]


def test_site_settings_file_extends_the_slurm_launcher(tmp_path: Path) -> None:
    site = tmp_path / "site" / "hydra" / "launcher"
    site.mkdir(parents=True)
    (site / "mysite.yaml").write_text(
        "defaults:\n  - slurm\n  - _self_\n"
        "account: proj42\nqos: normal\npartition: gpu\nsetup:\n  - module load cuda/12.4\n"
    )
    hydra = _hydra_config(f"--config-dir={tmp_path / 'site'}", "hydra/launcher=mysite", cwd=tmp_path)
    launcher = hydra["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["account"], launcher["qos"], launcher["partition"]) == ("proj42", "normal", "gpu")
    assert launcher["setup"] == ["module load cuda/12.4"]
    assert launcher["timeout_min"] == 60  # the rest is slurm.yaml's
    assert hydra["callbacks"]["slurm_checks"]["_target_"] == "optbench.cluster.launcher.SlurmChecks"


def test_slurm_launcher_without_sbatch_submits_nothing(tmp_path: Path) -> None:
    """hydra/launcher=slurm on a machine without sbatch: one paragraph, exit 2, no sweep folder, no MLflow store."""
    (tmp_path / "bin").mkdir()  # a PATH with no sbatch on it
    store = tmp_path / "mlflow.db"
    env = {**os.environ, "PATH": str(tmp_path / "bin"), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    args = ["-m", "hydra/launcher=slurm", "optimizer=sgd,adam", "data=digits", "model=mlp", "trainer=fast"]
    out = subprocess.run([BIN / "optbench-train", *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "sbatch" in out.stderr and "Nothing was submitted" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "multirun").exists()
    assert not store.exists()


def test_local_launcher_is_hydras_basic_one(tmp_path: Path) -> None:
    hydra = _hydra_config("hydra/launcher=local", cwd=tmp_path)
    assert hydra["launcher"]["_target_"] == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert "slurm_checks" not in (hydra.get("callbacks") or {})
