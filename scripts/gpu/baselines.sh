#!/usr/bin/env bash
# One-shot GPU benchmark of the baselines (run once on an H100/H200 box; about 3-4 minutes, offline).
#   OUT=/some/folder bash scripts/gpu/baselines.sh
# Needs: python with torch (CUDA), numpy, pyarrow, h5py, tqdm; run from anywhere inside the repository.
# Writes under $OUT: gpu.txt (nvidia-smi), smi.csv (utilisation every 0.5 s), phases.json, results.json
# (seconds per 297k-question epoch of text_2d3d / text_only at batch 24 and a large batch, data-loading
# rate alone) and summary.txt (the same with the mean GPU utilisation of each phase).
set -euo pipefail
OUT=${OUT:?set OUT to an output folder}
cd "$(dirname "$0")/../.."
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi > "$OUT/gpu.txt" 2>&1 || echo "nvidia-smi failed" >> "$OUT/gpu.txt"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$OUT/smi.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null || true; rm -rf "$OUT/work/features"' EXIT
# 210 s for the whole benchmark: the phases are bounded by batch counts, this only guards a hang.
# DEVICE=cpu SCALE=0.01 QUESTIONS=2000 CLIPS=20 make a smoke run of this script on a machine without GPU.
PYTHONPATH=. timeout 210 "$PY" scripts/gpu/bench_epoch.py --out "$OUT/work" --device "${DEVICE:-cuda}" \
    --clips "${CLIPS:-4000}" --questions "${QUESTIONS:-296960}" --scale "${SCALE:-1}" \
    --workers "${WORKERS:-10}" --large-batch "${BATCH:-512}" 2>&1 | tee "$OUT/log.txt" || true
kill $SMI 2>/dev/null || true
cp "$OUT/work/results.json" "$OUT/work/phases.json" "$OUT/" 2>/dev/null || true
"$PY" - "$OUT" <<'PYEOF' | tee "$OUT/summary.txt"
import datetime, json, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    res = json.loads((out / "results.json").read_text()); phases = json.loads((out / "phases.json").read_text())
except FileNotFoundError:
    sys.exit("no results: see log.txt")
samples = []
for line in (out / "smi.csv").read_text().splitlines():
    try:
        ts, util, mem = [x.strip() for x in line.split(",")]
        t = datetime.datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").timestamp()
        samples.append((t, float(util), float(mem)))
    except ValueError:
        continue
print(f"device: {res['device']}  torch {res['torch']}  epoch = {res['n_train']:,} questions")
for ph in phases:
    sel = [s for s in samples if ph["start"] <= s[0] <= ph["end"]]
    util = f"{sum(s[1] for s in sel) / len(sel):5.1f} %" if sel else "  n/a"
    mem = f"{max(s[2] for s in sel):6.0f} MiB" if sel else ""
    r = res["runs"].get(ph["name"], {})
    if "error" in r:
        fig = "ERROR " + r["error"]
    elif "s_per_epoch" in r:
        fig = f"{r['s_per_epoch']:7.1f} s/epoch ({r['questions_per_s']:8.0f} q/s, batch {r['batch']}, bn={r['batch_norm']}, amp={r['amp']})"
    elif "questions_per_s" in r:
        fig = f"data loading alone: {r['questions_per_s']:8.0f} q/s (batch {r['batch']}, {r['workers']} workers)"
    else:
        fig = ""
    print(f"{ph['name']:<22} {ph['end'] - ph['start']:6.1f} s  GPU util {util} {mem}  {fig}")
PYEOF
