#!/usr/bin/env bash
# The GPU benchmark in one short call on a GPU machine (with PyTorch; the package is used
# from services/, not installed): embedded explanation latency, cohort throughput with
# each stage batched across a chunk (with and without pictures), rows per model call,
# peak GPU memory. Results to $OUT (the device tool's folder) or benchmarks/results/.
#
#   benchmarks/gpu/run.sh            (IMAGES=256 CHUNKS=16,64 REPEATS=5 PROBE=10000)
#   DEVICE=cpu IMAGES=8 CHUNKS=4 REPEATS=1 PROBE=500 benchmarks/gpu/run.sh   (a dry run)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=services
out="${OUT:-benchmarks/results}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 benchmarks/gpu/bench_gpu.py --device "${DEVICE:-cuda}" --images "${IMAGES:-256}" \
    --chunks "${CHUNKS:-16,64}" --repeats "${REPEATS:-5}" --probe-samples "${PROBE:-10000}" \
    --out "$out"
cat "$out/gpu.md"
