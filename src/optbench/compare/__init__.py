"""The comparison of finished training runs: runs.py reads them from MLflow, targets.py says where the target
comes from (a targets file set a priori by reference.py's optbench-target, a number, or a named fallback),
profiles.py computes performance profiles and budget curves, analysis.py the per-optimizer table,
report.py renders it, publish.py writes the report files and logs them to MLflow. Each imports only the
ones before it."""
