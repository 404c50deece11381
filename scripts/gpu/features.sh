#!/usr/bin/env bash
# GPU feature-extraction benchmark, run once on an H100/H200 box (no internet; random-init weights).
# Prerequisite: torch + torchvision present; install the carried wheels first, e.g.
#   pip install --no-index --find-links wheels/ av h5py
# Usage: OUT=/path/to/results bash scripts/gpu/features.sh      (about 4 minutes in all)
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
python -c "import av, h5py, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  > "$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt"; echo "av/h5py/torch missing: install the wheels first"; exit 5; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
# Sample GPU utilisation every 200 ms while the benchmarks run.
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
  > "$OUT/nvidia_smi.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT
run() {  # name, timeout seconds, bench arguments...
  local name=$1 limit=$2; shift 2
  echo "== $name" | tee -a "$OUT/summary.txt"
  date +%s.%N > "$OUT/$name.start"
  timeout "$limit" python scripts/bench_extract.py --device cuda --weights none --json "$OUT/$name.json" "$@" \
    2>&1 | grep -v "random initialisation" | tee -a "$OUT/summary.txt"
  date +%s.%N > "$OUT/$name.end"
}
CLIPS=64
run googlenet 50 --preset paper_2d --clips $CLIPS --naive-clips 16
run efficientnet_lite0 50 --preset efficientnet_lite0 --clips $CLIPS --naive-clips 16
run i3d 60 --preset i3d --clips $CLIPS --naive-clips 16
run r2plus1d_18 50 --preset r2plus1d_18 --clips $CLIPS --naive-clips 16
kill $SMI 2>/dev/null
# Mean GPU utilisation during each benchmark, from the nvidia-smi samples.
python - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import csv, datetime, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for r in csv.reader(open(out / "nvidia_smi.csv")):
    try:
        ts = datetime.datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        rows.append((ts, float(r[1]), float(r[2])))
    except (ValueError, IndexError):
        continue
for name in ("googlenet", "efficientnet_lite0", "i3d", "r2plus1d_18"):
    try:
        a, b = (float((out / f"{name}.{k}").read_text()) for k in ("start", "end"))
    except FileNotFoundError:
        continue
    u = [x[1] for x in rows if a <= x[0] <= b]
    if u:
        print(f"{name}: GPU utilisation mean {sum(u)/len(u):.0f} %, max {max(u):.0f} % ({len(u)} samples)")
PY
