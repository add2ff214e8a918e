"""Claim studies: the classic optimizer questions as reproducible pipelines, each ending in a measured verdict.

A study is one YAML file, conf/study/<name>.yaml (the question, the claim, the measure, the `threshold`,
its cases and their optbench-train overrides, presets) and one pipeline folder, pipelines/<name>/. Its
`kind` names the measurement, a class registered under the entry-point group optbench.study_kinds:

    kinds/exact.py       loss_vs_lr_scale, grad_accumulation, ddp_equivalence: relative parameter distance
                         between two runs the mathematics says are (or are not) the same
    kinds/tuned.py       tuned_comparison (adam_vs_sgd, momentum, schedules, layerwise_lr): every case tuned with the same
                         Optuna budget, then trained over several seeds; each claim an interval against a margin
    kinds/sweeps.py      adamw_vs_adam_l2 (weight decay x learning rate grid), grad_clipping (lr sweep)
    kinds/batch_size.py  batch_size_scaling: batch 1 / mini-batch / full batch, linear and square-root scaling
    kinds/precision.py   precision: fp32, bf16-mixed, fp16-mixed with and without loss scaling
    kinds/memory.py      optimizer_memory: optimizer-state bytes per parameter byte and step time (also under
                         mixed precision)
    kinds/large_batch.py large_batch: each optimizer's accuracy drop from a small to a large batch, tuned per batch
    kinds/warmup.py      warmup_stability: the largest stable learning rate with and without warmup, per seed
    kinds/adaptive.py    adaptive_lr_decay: Adagrad's and RMSprop's effective step size, measured per step
    kinds/lbfgs.py       lbfgs_convex: steps, function evaluations and seconds to a tolerance on convex problems

What they share, one job a module: config.py (compose a study with Hydra), registry.py (the kinds),
runner.py (training and tuning a study's runs), measures.py (quantities several kinds measure),
verdict.py (judging claims, verdict.json), report.py (report.md and terminal tables), run.py (run_study).
Statistics come from optbench.stats.
"""
