#!/usr/bin/env bash
# GPU smoke benchmark for one GPU (<= 8 min on an A10G/L4/H100): do two trials that share
# the GPU (--gpus-per-trial 0.5, bf16) each keep most of the throughput of one trial alone,
# and how much GPU memory does each take?
#
#   benchmarks/gpu_check.sh [--cpu] [--quick]      (from the repository root, venv active
#                                                    or .venv/ present)
#
# 1. writes a random processed store (224x224 RGB; --cpu: 8x8 grey, the store format of biohash.data) under
#    the output folder, registered as CIFAR_10 (10 single-label classes) so every biohash
#    check treats it as the real thing;
# 2. runs `biohash sweep run` twice on an embedded Ray: 2 trials (seeds 0, 1) sharing the GPU,
#    then 1 trial alone on the whole GPU (bio-vgg16, mode fa, weights none, 2 epochs, bf16);
#    nvidia-smi samples per-process GPU memory meanwhile (each trial is its own process);
# 3. prints per trial: images/s of the last epoch (train images / epoch seconds, the epoch
#    time includes the 200-item validation) and peak GPU memory; then the ratios
#    shared/alone. Everything lands under $OUT (or ./gpu_check_out): summary.json,
#    summary.txt, the sweeps, the logs.
#
# --cpu: the same pipeline with tiny sizes on CPU (bio-cnn-small, fp32, no nvidia-smi):
#        what the test suite runs to keep this script working on machines without a GPU.
# --quick: fewer training images (a faster, noisier number).
set -euo pipefail

MODE=gpu
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --cpu|--dry-run) MODE=cpu ;;
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg'; allowed: --cpu, --quick" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
OUTDIR=${OUT:-gpu_check_out}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 MLFLOW_ENABLE_TELEMETRY=false
export BIOHASH_DATA_CACHE="$OUTDIR/cache"

if [ "$MODE" = gpu ]; then
  command -v nvidia-smi >/dev/null || { echo "gpu_check.sh: no nvidia-smi; use --cpu" >&2; exit 2; }
  ARCH=bio-vgg16 PRECISION=bf16 SIZE=224 CHANNELS=3 NTRAIN=4000 EPOCHS=2 BS=64 GPUS=0.5 GPUS_ALONE=1 CPUS=2
  [ "$QUICK" = 1 ] && NTRAIN=1500
else
  # bio-cnn-small is the 8x8 greyscale net of the embedded DIGITS set
  ARCH=bio-cnn-small PRECISION=fp32 SIZE=8 CHANNELS=1 NTRAIN=128 EPOCHS=1 BS=32 GPUS=0 GPUS_ALONE=0 CPUS=1
fi

echo "== gpu_check ($MODE): $ARCH $PRECISION ${SIZE}px, $NTRAIN train images, $EPOCHS epochs -> $OUTDIR"
"$PY" - "$OUTDIR/data" "$SIZE" "$CHANNELS" "$NTRAIN" <<'PY'
"""A random processed store in the documented layout, via biohash's StoreWriter."""
import sys
import numpy as np
from biohash.data.store import IMAGENET_MEAN, IMAGENET_STD, StoreWriter

root, size, channels, n_train = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sizes = {"train": n_train, "query": 100, "val": 200, "database": 400}
rng = np.random.default_rng(0)
writer = StoreWriter(root, "CIFAR_10", (size, size, channels))
writer.begin()
for fold, n in sizes.items():
    w = writer.fold_writer(fold, n)
    for start in range(0, n, 256):  # chunks: 4000 x 224 x 224 x 3 never sits in RAM
        block = rng.integers(0, 256, (min(256, n - start), size, size, channels), dtype=np.uint8)
        w.write_block(block, start)
    labels = np.eye(10, dtype=np.uint8)[rng.integers(0, 10, n)]
    writer.commit_fold(w, labels, [f"{fold}-{i}" for i in range(n)])
writer.finish(label_names=[f"c{i}" for i in range(10)], seed=0,
              mean=IMAGENET_MEAN[:channels], std=IMAGENET_STD[:channels], transform="imagenet", source="benchmarks/gpu_check.sh random")
print(f"random store: {sizes} of {size}x{size}x{channels} under {root}")
PY

space() {  # $1 = file, $2 = seeds list
  cat > "$1" <<EOF
description: gpu_check.sh throughput probe
fixed: {exp: gpu_check, db: CIFAR_10, arch: $ARCH, mode: fa, loss: DPSH, nbits: 32, bs: $BS,
        ep: $EPOCHS, pt: 10, lr: 1.0e-4, weights: none, precision: $PRECISION, val_size: 200}
seeds: $2
EOF
}
space "$OUTDIR/pair.yaml" "[0, 1]"
space "$OUTDIR/alone.yaml" "[0]"

SAMPLER=""
if [ "$MODE" = gpu ]; then  # per-process GPU memory, 1 sample/s, until this script ends
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -l 1 \
    > "$OUTDIR/nvidia-smi.csv" 2>/dev/null &
  SAMPLER=$!
  trap 'kill $SAMPLER 2>/dev/null || true' EXIT
fi

run() {  # $1 = name, $2 = gpus per trial
  local t0=$SECONDS
  "$PY" -m biohash.cli sweep run --space "$OUTDIR/$1.yaml" --name "$1" --storage "$OUTDIR/sweeps" \
    --data-root "$OUTDIR/data" --mlflow-uri "" --gpus-per-trial "$2" --cpus-per-trial "$CPUS" \
    --num-cpus 4 --max-failures 0 --tune-verbose 0 > "$OUTDIR/$1.log" 2>&1 \
    || { tail -n 40 "$OUTDIR/$1.log" >&2; exit 1; }
  echo "$1: done in $((SECONDS - t0)) s"
}
run pair "$GPUS"
run alone "$GPUS_ALONE"
[ -n "$SAMPLER" ] && { sleep 1; kill "$SAMPLER" 2>/dev/null || true; }

"$PY" - "$OUTDIR" "$NTRAIN" <<'PY'
"""Per-trial images/s (Tune's result.json) and peak GPU memory (nvidia-smi, by worker pid)."""
import json
import sys
from pathlib import Path

out, n_train = Path(sys.argv[1]), int(sys.argv[2])
mem: dict[int, float] = {}
smi = out / "nvidia-smi.csv"
if smi.is_file():
    for line in smi.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            mem[int(parts[0])] = max(mem.get(int(parts[0]), 0.0), int(parts[1]) / 1024)


def trials(sweep: str) -> list[dict]:
    rows = []
    for result in sorted((out / "sweeps" / sweep).glob("**/result.json")):
        reports = [json.loads(l) for l in result.read_text().splitlines() if l.strip()]
        epochs = [r for r in reports if r.get("phase") == "train" and r.get("time/epoch_s")]
        if not epochs:
            raise SystemExit(f"no epoch reports in {result}")
        last = epochs[-1]
        rows.append({"sweep": sweep, "trial": result.parent.name, "epochs": len(epochs),
                     "epoch_s": last["time/epoch_s"],
                     "images_per_s": n_train / last["time/epoch_s"], "pid": last.get("pid"),
                     "gpu_mem_gib": mem.get(last.get("pid")), "node_ip": last.get("node_ip")})
    return rows


pair, alone = trials("pair"), trials("alone")
if len(pair) != 2 or len(alone) != 1:
    raise SystemExit(f"expected 2 + 1 trials, found {len(pair)} + {len(alone)}")
lines = []
for r in pair + alone:
    m = "n/a" if r["gpu_mem_gib"] is None else f"{r['gpu_mem_gib']:.2f} GiB"
    lines.append(f"{r['sweep']:<6} {r['trial'][-12:]}  {r['images_per_s']:8.1f} images/s  "
                 f"(epoch {r['epoch_s']:.2f} s)  GPU memory {m}")
each = sum(r["images_per_s"] for r in pair) / 2
total = sum(r["images_per_s"] for r in pair)
solo = alone[0]["images_per_s"]
summary = {"trials": pair + alone, "shared_per_trial_over_alone": each / solo,
           "shared_total_over_alone": total / solo, "n_train": n_train}
lines.append(f"ratio per trial, shared/alone: {each / solo:.2f}   "
             f"ratio GPU total (2 shared)/alone: {total / solo:.2f}")
(out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
(out / "summary.txt").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
