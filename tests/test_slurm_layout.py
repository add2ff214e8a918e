"""Runs under SLURM: the ranks srun starts must be the ranks strategy=ddp expects, and a job submitit started
stops for preemption with a checkpoint. The SLURM environment is constructed here; the real cluster runs
these paths in tests/cluster."""

from __future__ import annotations

import signal

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from optbench.core.config import compose_config, gpus_per_node, srun_tasks_per_node
from optbench.core.errors import ConfigError
from optbench.training.checks import check_values
from optbench.training.train import preemption_signal

pytestmark = pytest.mark.unit

SLURM_VARS = ("SLURM_NTASKS", "SLURM_NNODES", "SLURM_JOB_NUM_NODES", "SLURM_JOB_NAME", "SLURM_JOB_ID")


@pytest.fixture
def slurm_job(monkeypatch: pytest.MonkeyPatch):
    """A SLURM job's environment as srun sets it for each task: `slurm_job(nodes=1, tasks=2)`."""
    for name in SLURM_VARS:
        monkeypatch.delenv(name, raising=False)

    def job(nodes: int, tasks: int, name: str = "train") -> None:
        monkeypatch.setenv("SLURM_JOB_ID", "42")
        monkeypatch.setenv("SLURM_JOB_NODELIST", "vm")
        monkeypatch.setenv("SLURM_JOB_NAME", name)
        monkeypatch.setenv("SLURM_NNODES", str(nodes))
        monkeypatch.setenv("SLURM_NTASKS", str(tasks))

    return job


def ddp(devices: int, num_nodes: int = 1):
    return compose_config("strategy=ddp", f"strategy.devices={devices}", f"strategy.num_nodes={num_nodes}")


def test_ddp_with_one_srun_task_per_rank_is_accepted(slurm_job):
    slurm_job(nodes=1, tasks=2)
    check_values(ddp(devices=2))


def test_more_nodes_than_the_job_has_is_refused_before_anything_runs(slurm_job):
    slurm_job(nodes=1, tasks=2)
    with pytest.raises(ConfigError, match=r"strategy.num_nodes=2 is larger than the 1 node\(s\) of SLURM job 42"):
        check_values(ddp(devices=1, num_nodes=2))


def test_ranks_and_srun_tasks_that_disagree_are_refused(slurm_job):
    slurm_job(nodes=1, tasks=1)  # sbatch without srun: Lightning would wait for a second rank forever
    with pytest.raises(ConfigError, match=r"1 x 2 = 2 ranks, but srun started 1 task\(s\)"):
        check_values(ddp(devices=2))


def test_an_salloc_shell_is_not_a_job_whose_ranks_srun_starts(slurm_job):
    slurm_job(nodes=1, tasks=1, name="interactive")  # Lightning starts the ranks itself there
    check_values(ddp(devices=2))


def test_ddp_in_a_sweep_needs_a_launcher_that_starts_the_ranks():
    cfg = ddp(devices=2)
    hydra_cfg = HydraConfig.get()
    OmegaConf.set_readonly(hydra_cfg, False)
    hydra_cfg.mode = "MULTIRUN"
    with pytest.raises(ConfigError, match="cannot run inside a Hydra multirun on this machine"):
        check_values(cfg)
    with open_dict(hydra_cfg):
        hydra_cfg.launcher = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    check_values(cfg)


@pytest.mark.parametrize(
    ("strategy", "devices", "tasks"), [("ddp", 4, 4), ("ddp_spawn", 4, 1), ("auto", 1, 1), ("fsdp", 2, 1)]
)
def test_slurm_tasks_per_node_are_the_ranks_only_when_srun_starts_them(strategy, devices, tasks):
    assert srun_tasks_per_node(strategy, devices) == tasks


def test_gpus_per_node_follow_the_devices_on_a_gpu_trainer_only():
    assert gpus_per_node("gpu", 4) == 4
    assert gpus_per_node("cpu", 4) is None


def test_the_preemption_signal_is_submitits_in_its_jobs_only(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SUBMITIT_FOLDER", raising=False)
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert preemption_signal() is None
    monkeypatch.setenv("SUBMITIT_FOLDER", "/tmp/jobs")
    assert preemption_signal() == signal.SIGUSR2
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert preemption_signal() == signal.SIGUSR1
