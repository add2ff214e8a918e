"""The workload suite: the default comparison on every workload of a tier, read back from MLflow into one cross-workload report (per-workload tables, performance profiles, AlgoPerf scores)."""
