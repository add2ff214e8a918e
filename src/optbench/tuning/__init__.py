"""Optuna studies over training runs: equal budgets, pruning, resume, parallel workers, tuning plots."""
