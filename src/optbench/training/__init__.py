"""One training run: data, models, optimizers and schedules, the LightningModule, checks, train(cfg),
the Tuner-based finders and the prepared split."""
