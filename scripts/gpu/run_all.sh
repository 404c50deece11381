#!/usr/bin/env bash
# One device session: install carried wheels (PyAV), run the GPU feature and baseline benchmarks,
# and pack everything into $OUT/gpu_results.tgz (the device returns at most 8 files).
# Usage (on the GPU box, from the repo root): OUT=/path bash scripts/gpu/run_all.sh
set -u
cd "$(dirname "$0")/../.."
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH="${PYTHONPATH:-}:$PWD" PYTHONUNBUFFERED=1
RES=/tmp/gpu_results
mkdir -p "$RES/features" "$RES/baselines"
nvidia-smi > "$RES/nvidia-smi.txt" 2>&1
for part in "$@"; do
    echo "=== $part"
    OUT="$RES/$part" timeout 330 bash "scripts/gpu/$part.sh" 2>&1 | tee "$RES/$part.log"
done
tar czf "$OUT/gpu_results.tgz" -C "$RES" .
cat "$RES"/*/summary.txt 2>/dev/null | tail -80
