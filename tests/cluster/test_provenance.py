"""Provenance under a real SLURM job step: what each task of `srun -n 2` records about where it ran."""

from __future__ import annotations

import json
import subprocess
import sys

PRINT_TAGS = (
    "import json; from optbench.tracking.provenance import environment_tags; print(json.dumps(environment_tags()))"
)


def test_each_task_of_a_job_step_records_the_job_and_its_size(slurm: dict[str, str]) -> None:
    out = subprocess.run(["srun", "-n", "2", "--time", "5", sys.executable, "-c", PRINT_TAGS],
                         capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    tags = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(tags) == 2
    assert tags[0]["optbench.slurm_job_id"] == tags[1]["optbench.slurm_job_id"]  # one job, two tasks
    assert {t["optbench.slurm_ntasks"] for t in tags} == {"2"}
    assert {t["optbench.world_size"] for t in tags} == {"2"}
    assert "optbench.slurm_array_task_id" not in tags[0]  # not an array job
    assert tags[0]["optbench.slurm_nodelist"]
