"""The cluster path: SLURM jobs through submitit (multirun jobs, tuning workers), the ranks srun starts, and what a run records about the cluster it ran on."""
