"""The command-line entry points: thin Hydra (and argparse) wrappers that import the heavy layers
(torch, Lightning, MLflow) only once a command really runs, so `--help`, `--cfg job` and config errors
answer in about a second."""
