#!/usr/bin/env bash
# One device session: install carried wheels (PyAV), run the named GPU benchmarks, and pack everything
# into $OUT/gpu_results.tgz (the device returns at most 8 files).
# Usage (on the GPU box, from the repo root): OUT=/path bash scripts/gpu/run_all.sh features [baselines]
# Everything lands in $OUT/gpu_results.tgz (per part: JSON results, nvidia-smi samples, logs), and each
# part's summary also in $OUT/<part>-summary.txt.
# "features" takes at most 390 s (scripts/gpu/features.sh; about 4 minutes expected), "baselines" about 4
# minutes: one part per command keeps each command inside the device's 10-minute limit.
set -u
cd "$(dirname "$0")/../.."
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH="${PYTHONPATH:-}:$PWD" PYTHONUNBUFFERED=1
RES=/tmp/gpu_results
mkdir -p "$RES"
nvidia-smi > "$RES/nvidia-smi.txt" 2>&1
for part in "$@"; do
    echo "=== $part"
    mkdir -p "$RES/$part"
    OUT="$RES/$part" timeout 400 bash "scripts/gpu/$part.sh" 2>&1 | tee "$RES/$part.log"
done
mkdir -p "$OUT"
tar czf "$OUT/gpu_results.tgz" -C "$RES" .
for part in "$@"; do  # readable without unpacking
    cp "$RES/$part/summary.txt" "$OUT/$part-summary.txt" 2>/dev/null || true
done
cat "$RES"/*/summary.txt 2>/dev/null | tail -80
