#!/usr/bin/env bash
# optbench's GPU checks, for a machine with an NVIDIA GPU (never run by CI). In the repository root, with
# optbench installed (pip install -e .):
#
#   bash benchmarks/gpu_check.sh                  # GPU: about 8 minutes on one recent GPU
#   ACCEL=cpu bash benchmarks/gpu_check.sh        # the same commands, tiny, on a CPU (checks this script)
#   ONLY="overhead host-syncs" bash benchmarks/gpu_check.sh   # some of the checks (names as in summary.txt)
#
# What it runs, each with a time limit, logging to $OUT/all.log and one line per check to $OUT/summary.txt:
#   1. benchmarks/overhead.py on CIFAR-10-shaped data (benchmarks/synthetic.py) with ResNet-18: optbench's
#      throughput against a plain PyTorch loop on the GPU (goal >= 0.95), also with channels_last and with
#      torch.compile; ratios in $OUT/overhead_*.json (benchmarks/report.py puts them in the README).
#   2. host syncs per step: a training run under torch.cuda.set_sync_debug_mode("warn"), its synchronizing
#      calls counted against its optimizer steps ($OUT/syncs.json).
#   3. optbench-train with trainer=gpu in 32-true, bf16-mixed and 16-mixed (GradScaler) on digits.
#   4. strategy=ddp on one GPU, and optbench-bs-find on the GPU.
# Exit status: the number of failed checks.
set -u -o pipefail

ACCEL=${ACCEL:-gpu}
OUT=${OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
: > "$OUT/summary.txt"
: > "$OUT/all.log"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
failed=0

if [ "$ACCEL" = gpu ]; then
  train_images=10000 held_out=2000 epochs=3 repeats=3 trainer=gpu model=resnet18
else
  train_images=256 held_out=64 epochs=2 repeats=1 trainer=cpu model=cnn
fi

check() {  # check NAME SECONDS COMMAND...: run it with a limit, log it, record its outcome and wall time
  local name=$1 limit=$2 start rc
  shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY synthetic-cifar10 " != *" $name "* ]]; then return; fi
  start=$(date +%s%N)
  echo "=== $name: $*" >> "$OUT/all.log"
  timeout "$limit" "$@" >> "$OUT/all.log" 2>&1
  rc=$?
  local ms=$((($(date +%s%N) - start) / 1000000))
  if [ $rc -eq 0 ]; then outcome=ok; else outcome="FAILED (exit $rc)"; failed=$((failed + 1)); fi
  printf '%-28s %-18s %5d.%01d s\n' "$name" "$outcome" $((ms / 1000)) $((ms % 1000 / 100)) | tee -a "$OUT/summary.txt"
}

{
  echo "=== machine"
  nvidia-smi 2>&1 | head -15 || true
  "$PY" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
} >> "$OUT/all.log" 2>&1

data="$work/cifar10.pt"
check synthetic-cifar10 120 "$PY" benchmarks/synthetic.py --output "$data" --train "$train_images" --val "$held_out" --test "$held_out"
common=(--accelerator "$ACCEL" --model "$model" --data cifar10 --override "data.prepared=$data"
        --override data.augment=false --epochs "$epochs" --repeats "$repeats")
check overhead 150 "$PY" benchmarks/overhead.py "${common[@]}" --json "$OUT/overhead_${model}.json"

check host-syncs 120 "$PY" benchmarks/syncs.py --accelerator "$ACCEL" --json "$OUT/syncs.json" \
  "data.prepared=$data" data=cifar10 data.augment=false "model=$model"

run=(optbench-train data=digits model=mlp "trainer=$trainer" logger=csv trainer.max_epochs=3
     trainer.enable_progress_bar=false checkpoint.enabled=false)
for precision in 32-true bf16-mixed 16-mixed; do
  check "train-$precision" 90 "${run[@]}" "precision=$precision" "hydra.run.dir=$work/train-$precision"
done
check train-ddp-1-device 120 "${run[@]}" strategy=ddp strategy.devices=1 "hydra.run.dir=$work/ddp"
check bs-find 120 optbench-bs-find data=cifar10 "data.prepared=$data" data.augment=false "model=$model" \
  "trainer=$trainer" logger=none "find.output_dir=$work/bs-find" "hydra.run.dir=$work/bs-find"
grep -h '"suggestion"\|"batch_size"' "$work"/bs-find/*.json >> "$OUT/all.log" 2>/dev/null || true

check overhead-channels-last 150 "$PY" benchmarks/overhead.py "${common[@]}" --channels-last \
  --json "$OUT/overhead_${model}_channels_last.json"
check overhead-compile 240 "$PY" benchmarks/overhead.py "${common[@]}" --compile --repeats 1 \
  --json "$OUT/overhead_${model}_compile.json"

echo "failed checks: $failed" | tee -a "$OUT/summary.txt"
exit "$failed"
