#!/usr/bin/env bash
# The GPU cases of biohash's benchmarks, in one short run (~3 min on an H100/H200), for a
# GPU machine that has PyTorch but neither Ray nor MLflow (gpu_check.sh needs both):
#
#   benchmarks/gpu_bench.sh            (from the repository root; results under $OUT or
#                                       ./gpu_bench_out)
#
# 1. bio_overhead.py, the CUDA workload (torchvision VGG16 at 224x224, batch 32, bf16
#    autocast): each learning rule's step time and peak memory against backprop's,
#    >= 11 interleaved rounds, median with min-max;
# 2. train_step.py: bio-vgg16 (fa) vs torchvision vgg16 images/s (CPU 32x32 and CUDA 224x224);
# 3. one whole trial (train -> predict -> evaluate) on the embedded DIGITS set through
#    biohash.pipeline.run_trial with precision auto and mode brsf: the device and precision
#    the trial records (must be cuda / bf16 here).
# Each step's output goes to its own file; a failing step is reported and the next runs.
set -uo pipefail

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
OUTDIR=${OUT:-gpu_bench_out}
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export BIOHASH_DATA_CACHE="$OUTDIR/cache"
status=0

step() {  # $1 = name, rest = command
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  if "$@" > "$OUTDIR/$name.txt" 2>&1; then
    tail -n 25 "$OUTDIR/$name.txt"
  else
    status=1; echo "$name FAILED"; tail -n 40 "$OUTDIR/$name.txt"
  fi
  echo "($name: $((SECONDS - t0)) s)"
}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader | tee "$OUTDIR/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

step bio_overhead "$PY" benchmarks/bio_overhead.py --workload vgg16@224
step train_step "$PY" benchmarks/train_step.py --quick
step trial "$PY" - "$OUTDIR/trial" <<'PY'
"""One whole DIGITS trial on the GPU through the pipeline; prints what it recorded."""
import json
import sys
from pathlib import Path

from biohash import TrialConfig
from biohash.pipeline import Runtime, run_trial

out = Path(sys.argv[1])
cfg = TrialConfig(db="DIGITS", arch="bio-cnn-small", mode="brsf", loss="DPSH", nbits=16,
                  bs=64, ep=3, lr=1e-3, weights="none", precision="auto")
final = run_trial(cfg, out / "run", runtime=Runtime(data_root=str(out / "data")))
report = final.to_dict()
print(json.dumps({k: report[k] for k in ("status", "score", "hw/device", "hw/precision")
                  if k in report}, indent=1))
if report.get("hw/device", "").split(":")[0] != "cuda":
    raise SystemExit(f"the trial ran on {report.get('hw/device')!r}, not on the GPU")
PY
exit $status
