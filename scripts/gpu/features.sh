#!/usr/bin/env bash
# GPU feature-extraction benchmark in one command on an H100/H200 box (offline; random-init weights, which
# cost the same time as pretrained ones). At most 390 s (the sum of the time limits below), about 4 minutes
# expected.
# Prerequisite: python3 with torch + torchvision (CUDA), h5py and PyAV; run_all.sh installs carried wheels
# (.whl/*.whl, e.g. av) first:   OUT=/path/to/results bash scripts/gpu/run_all.sh features
# Alone:                          OUT=/path/to/results bash scripts/gpu/features.sh
# Writes under $OUT: env.txt, gpu.txt, nvidia_smi.csv (GPU utilisation and memory every 200 ms), one
# <name>.json per benchmark (scripts/bench_extract.py --json) with its <name>.start/.end times, and
# summary.txt (the benchmarks' output, then one line per benchmark with the ratios and GPU utilisation),
# and gpu_tests.txt (the opt-in GPU tests of the pipeline and preprocessing: CUDA features = CPU features).
# GoogLeNet, EfficientNet-Lite0, I3D and R(2+1)D run as the pipeline runs now (uint8 from the workers,
# normalised on the GPU); GoogLeNet and I3D run again with --normalise-in-workers (float32 from the
# workers, as before) for a before/after comparison on the same machine.
# Smoke run of this script without a GPU: DEVICE=cpu CLIPS=2 PYTHON=.venv/bin/python OUT=/tmp/x bash ...
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-results}"
PY=${PYTHON:-python3}
CLIPS=${CLIPS:-64}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
"$PY" -c "import av, h5py, torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'av', av.__version__, 'cuda', torch.cuda.is_available())" \
  > "$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt"; echo "av/h5py/torch missing: install the wheels first"; exit 5; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
  > "$OUT/nvidia_smi.csv" 2>/dev/null &
SMI=$!
CLIPDIR=$(mktemp -d)
trap 'kill $SMI 2>/dev/null; rm -rf "$CLIPDIR"' EXIT
# The synthetic clips, made once for all the benchmarks (bench_extract.py reuses them via --clips-dir).
timeout 30 "$PY" -c "import sys; sys.path.insert(0, 'scripts'); from pathlib import Path; from bench_extract import make_clips; make_clips(Path('$CLIPDIR'), $CLIPS, 2.0, (640, 360), 'mpeg4')" \
  || echo "making the clips failed or timed out; each benchmark makes the missing ones"
run() {  # name, time limit in seconds, bench_extract.py arguments...
  local name=$1 limit=$2; shift 2
  echo "== $name" | tee -a "$OUT/summary.txt"
  date +%s.%N > "$OUT/$name.start"
  timeout "$limit" "$PY" scripts/bench_extract.py --device "$DEVICE" --weights none --clips "$CLIPS" \
    --clips-dir "$CLIPDIR" --json "$OUT/$name.json" "$@" 2>&1 | grep -v "random initialisation" \
    | tee -a "$OUT/summary.txt"
  date +%s.%N > "$OUT/$name.end"
}
run googlenet 50 --preset paper_2d --naive-clips 16
run efficientnet_lite0 50 --preset efficientnet_lite0 --naive-clips 16
run i3d 60 --preset i3d --naive-clips 16
run r2plus1d_18 50 --preset r2plus1d_18 --naive-clips 16
run googlenet_float_workers 45 --preset paper_2d --naive-clips 4 --normalise-in-workers
run i3d_float_workers 45 --preset i3d --naive-clips 4 --normalise-in-workers
kill $SMI 2>/dev/null
echo "== GPU tests" | tee -a "$OUT/summary.txt"
MOVIEFIB_TEST_GPU=1 timeout 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_pipeline.py \
  tests/test_extractors.py > "$OUT/gpu_tests.txt" 2>&1
tail -3 "$OUT/gpu_tests.txt" | tee -a "$OUT/summary.txt"
# One line per benchmark: its figures and the GPU utilisation during it, from the nvidia-smi samples.
"$PY" - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import csv, datetime, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for r in csv.reader(open(out / "nvidia_smi.csv")):
    try:
        ts = datetime.datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
        rows.append((ts, float(r[1]), float(r[2])))
    except (ValueError, IndexError):
        continue
print("== summary (clips/s; limit: min(decode, model) on a GPU, 1/(1/decode + 1/model) on the CPU)")
for name in ("googlenet", "efficientnet_lite0", "i3d", "r2plus1d_18", "googlenet_float_workers",
             "i3d_float_workers"):
    try:
        a, b = (float((out / f"{name}.{k}").read_text()) for k in ("start", "end"))
        r = json.loads((out / f"{name}.json").read_text())["bench"]
    except (FileNotFoundError, KeyError, ValueError):
        print(f"{name}: no result (failed or timed out; see above)")
        continue
    u = [x[1] for x in rows if a <= x[0] <= b]
    util = f"GPU util mean {sum(u)/len(u):.0f} %, max {max(u):.0f} %" if u else "no GPU samples"
    print(f"{name}: workers ship {r['worker_output']}, main threads {r['pipeline_main_threads']}; decode "
          f"{r['decode_clips_s']:.1f}, model {r['model_clips_s']:.1f}, pipeline {r['pipeline_clips_s']:.1f}, "
          f"naive {r['naive_clips_s']:.2f}; pipeline/limit {r['pipeline_vs_limit']:.2f}, "
          f"pipeline/naive {r['pipeline_vs_naive']:.1f}; {util} ({len(u)} samples, {b - a:.0f} s)")
PY
