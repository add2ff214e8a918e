"""optbench-lr-find and optbench-bs-find: Lightning's Tuner on the run that optbench-train would train.

optbench-lr-find optimizer=adamw               # learning-rate range test: lr_find.png, lr_find.json
optbench-bs-find trainer=gpu model=resnet18 data=cifar10   # largest batch that fits: batch_size_find.json
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from optbench.core.config import config_path
from optbench.core.errors import user_errors
from optbench.core.logs import quiet_known_warnings


@hydra.main(version_base="1.3", config_path=config_path(), config_name="find")
def lr_find_main(cfg: DictConfig) -> float | None:
    quiet_known_warnings()
    with user_errors():
        from optbench.training.finder import lr_find  # Lightning loads only once the test runs

        result = lr_find(cfg)
    steps = f"{result['steps']} of {result['num_training']} steps" + (
        ", stopped early as the loss blew up" if result["stopped_early"] else ""
    )
    if result["suggestion"] is None:
        print(
            f"lr_find: no suggestion for optimizer={result['optimizer']}: the loss curve has too few finite "
            f"points ({steps}); raise find.num_training or find.early_stop_threshold, or lower find.max_lr. "
            f"Plot: {result['plot']}"
        )
    else:
        print(
            f"lr_find: suggested learning rate {result['suggestion']:.3g} for optimizer={result['optimizer']} "
            f"(steepest loss descent; lr {result['min_lr']:g} to {result['max_lr']:g}, {steps}). "
            f"Plot: {result['plot']}"
        )
    return result["suggestion"]


@hydra.main(version_base="1.3", config_path=config_path(), config_name="find")
def batch_size_find_main(cfg: DictConfig) -> int | None:
    quiet_known_warnings()
    with user_errors():
        from optbench.training.finder import batch_size_find

        result = batch_size_find(cfg)
    print(
        f"batch_size_find: largest batch size that trained: {result['batch_size']} "
        f"(training split: {result['train_size']} examples; {result['accelerator']}). Result: {result['json']}"
    )
    return result["batch_size"]


if __name__ == "__main__":
    lr_find_main()
