#!/usr/bin/env bash
# The biggest part of the full-scale study `posthoc-vs-joint-full` in one command on a lent GPU machine
# (one H100/H200, 16 cores; at most 10 minutes a command, about 15 minutes in all).
#
# The biggest part is cifar-10-jpeg: its 36 trainings (3 seeds x 12 models) take about 9 hours on the 2-core
# machine. Here they run as WORKERS jobs side by side on the one GPU (each job's images live on the GPU as
# uint8, batches of 128 as in the CPU protocol, so the numbers are the protocol's), the sweep stops cleanly
# after BUDGET seconds, and everything comes back under $OUT:
#   results.json          every cell of the sweep (axes, status, metrics with the device each model trained on)
#   sweep.tgz             the sweep folder without weights (database, claims, every run's JSON and history)
#   weights.tgz.partNN    the weights and checkpoints, in parts of 15 MB (at most 5), to resume or evaluate here
#   log.txt               the driver's output
# Run the same call again on a warm machine to continue where it stopped (runs/ is kept there between calls).
#
# Prepare here, once (the machine can fetch nothing; .whl and .gpu-data are gitignored and travel with `carry`):
#   bash bench/gpu/fetch_wheels.sh
#   mkdir -p .gpu-data/cifar-10-jpeg && cp ../shared/datasets/cifar-10-jpeg/cifar-10-jpeg.tar.gz .gpu-data/cifar-10-jpeg/
# Then the device call: command `bash bench/gpu/posthoc_vs_joint_full.sh`, carry [".whl", ".gpu-data"], timeout_s 600.
# Back here, add the results beside the CPU cells:
#   mkdir -p runs/sweeps/posthoc-vs-joint-full-gpu && tar xzf sweep.tgz -C runs/sweeps/posthoc-vs-joint-full-gpu
#   cat weights.tgz.part* | tar xz -C runs/sweeps/posthoc-vs-joint-full-gpu
#   python examples/posthoc_vs_joint_full_table.py runs/sweeps/posthoc-vs-joint-full runs/sweeps/posthoc-vs-joint-full-gpu
#
# Dry run on CPU (what CI-less checks can do here): DEVICE=cpu WORKERS=2 BUDGET=60 PY=.venv/bin/python \
#   DATA=../shared/datasets SLICE="--only data.name=mnist --only rate=10 --only seed=0" bash bench/gpu/posthoc_vs_joint_full.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-12}
BUDGET=${BUDGET:-480}
SLICE=${SLICE:---only data.name=cifar-10-jpeg}
SWEEP=${SWEEP:-runs/sweeps/posthoc-vs-joint-full-gpu}
DATA=${DATA:-.gpu-data}
OUT=${OUT:-runs/gpu-out}
mkdir -p "$OUT" "$SWEEP"
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 POSTHOC_VQ_CACHE=${POSTHOC_VQ_CACHE:-/tmp/posthoc-vq-cache}
{
  date -u
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  nproc
  # the spec's jobs, WORKERS at a time on one device; SIGINT at the budget: interrupted cells stay pending and resume next call
  timeout --signal=INT --kill-after=30 "$BUDGET" $PY -m posthoc_vq.cli ablate posthoc-vs-joint-full --executor process --workers "$WORKERS" \
    --device "$DEVICE" --data-dir "$DATA" --out "$SWEEP" $SLICE --no-progress
  echo "ablate exit code $? (124: stopped at the budget of ${BUDGET} s; run again to continue)"
  $PY -m posthoc_vq.cli results "$SWEEP" --format json > "$OUT/results.json"
  date -u
} 2>&1 | tee "$OUT/log.txt"
tar czf "$OUT/sweep.tgz" -C "$SWEEP" --exclude='*.safetensors' --exclude='*.lock' .
(cd "$SWEEP" && find . -name '*.safetensors' -print0 | tar czf - --null -T -) | split -b 15M -d - "$OUT/weights.tgz.part"
parts=$(ls "$OUT"/weights.tgz.part* 2>/dev/null | wc -l)
if [ "$parts" -gt 5 ]; then
  echo "the weights take $parts parts of 15 MB: only 5 come back; the results and JSON are complete" | tee -a "$OUT/log.txt"
  ls "$OUT"/weights.tgz.part* | tail -n +6 | xargs rm -f
fi
ls -la "$OUT"
