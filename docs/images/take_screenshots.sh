#!/usr/bin/env bash
# Screenshots of what a user sees, for the README: the MLflow runs table, a run page, the compare page
# (a real `mlflow ui` on 127.0.0.1 over a small fresh store) and the comparison report; the offline DVC
# plots page too. Needs Debian's chromium (apt-get install -y chromium). Run from the repository root:
#   docs/images/take_screenshots.sh            # about two minutes on 2 CPU cores
# screenshots.py drives the browser; each PNG is reduced to a 256-colour palette (under 400 KB).
set -euo pipefail
ROOT=$(pwd)
BIN=$ROOT/.venv/bin
OUT=$ROOT/docs/images
PORT=${PORT:-5077}
WORK=$(mktemp -d)
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" OPTBENCH_CONFIG_DIR="$ROOT/conf"

# A small store: two optimizers x two seeds on the embedded digits, 10 epochs, then their comparison.
(cd "$WORK" && "$BIN/optbench-train" -m optimizer=sgd,adam seed=0,1 data=digits model=mlp \
    trainer.max_epochs=10 trainer.enable_progress_bar=false >"$WORK/train.log" 2>&1)
(cd "$WORK" && "$BIN/optbench-compare" data=digits model=mlp epochs=10 target_rule=best_optimizer_median \
    output_dir="$WORK/compare" targets_dir="$ROOT/conf/targets" >"$WORK/compare.log" 2>&1)

setsid "$BIN/mlflow" ui --backend-store-uri "$MLFLOW_TRACKING_URI" --host 127.0.0.1 --port "$PORT" \
    >"$WORK/ui.log" 2>&1 &
UI=$!
trap 'kill -- -$UI 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 1; done

# The ids the pages need: the experiment, its newest run, and every run of it.
read -r EXP RUN RUNS < <("$BIN/python" - <<'PY'
import json
from mlflow.tracking import MlflowClient
client = MlflowClient()
exp = client.get_experiment_by_name("optbench")
runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
print(exp.experiment_id, runs[0].info.run_id, json.dumps([r.info.run_id for r in runs], separators=(",", ":")))
PY
)
URL="http://127.0.0.1:$PORT/#"
RUNS_Q=$("$BIN/python" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$RUNS")
EXPS_Q=$("$BIN/python" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "[\"$EXP\"]")

ML="?workflowType=machine_learning"  # MLflow's model-training view (what the experiment kind tag selects)
"$BIN/dvc" plots show --html-template vendor/vega/dvc_plots.html -o dvc_plots >/dev/null
"$BIN/python" docs/images/screenshots.py "$OUT" \
    "mlflow_runs_table=$URL/experiments/$EXP/runs$ML@@sgd-mlp-digits-s0" \
    "mlflow_run_page=$URL/experiments/$EXP/runs/$RUN$ML" \
    "mlflow_system_metrics=$URL/experiments/$EXP/runs/$RUN/system-metrics$ML" \
    "mlflow_compare_runs=$URL/compare-runs?runs=$RUNS_Q&experiments=$EXPS_Q&workflowType=machine_learning" \
    "compare_report=file://$WORK/compare/report.html" \
    "dvc_plots_offline=file://$ROOT/dvc_plots/index.html"
ls -l "$OUT"/*.png
