"""The comparison of finished training runs: runs.py reads them from MLflow, analysis.py computes the
per-optimizer table, report.py renders it, publish.py writes the report files and logs them to MLflow.
Each imports only the ones before it."""
