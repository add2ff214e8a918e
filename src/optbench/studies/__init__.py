"""Claim studies: the classic optimizer questions as reproducible pipelines, each ending in a measured verdict.

    optbench-study list                                  # each study's question and last verdict
    optbench-study run adam_vs_sgd                       # run it; writes pipelines/<study>/results/
    optbench-study run grad_accumulation --preset test   # the test-sized form
    optbench-study run loss_vs_lr_scale --set steps=20 --set 'optimizers=[sgd,adam]'

A study is one YAML file, conf/study/<name>.yaml: the question, the claim, the measure, the `threshold`,
its cases and their optbench-train overrides, and the `kind` of measurement, one module here:

    exact.py       loss_vs_lr_scale, grad_accumulation, ddp_equivalence: relative parameter distance
                   between two runs the mathematics says are (or are not) the same, against a threshold
    tuned.py       adam_vs_sgd, momentum, schedules: every case tuned with the same Optuna budget, then
                   trained over several seeds; each claim is a t-interval of a difference against a margin
    sweeps.py      adamw_vs_adam_l2 (weight decay x learning rate grid), grad_clipping (learning-rate
                   sweep with and without clipping)
    batch_size.py  batch_size_scaling: batch 1 / mini-batch / full batch on a convex problem, and the
                   linear and square-root scaling rules against retuning
    precision.py   fp32, bf16-mixed, fp16-mixed with and without loss scaling
    memory.py      optimizer-state bytes per parameter byte and step time, for every optimizer

core.py holds what they share: loading a study, training one run in the study's MLflow experiment,
tuning one case, the verdict file, the report and the command line.
"""
