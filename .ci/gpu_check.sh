#!/usr/bin/env bash
# The GPU checks of one device session, in one call: the CUDA tests, the HBP artifacts on
# the GPU and on the emulated device, the measured times next to the emulated device's traffic
# figures (tools/traffic_vs_time.py), the kernels' occupancy (tools/cuda_occupancy.py, where
# nvcc is installed), the CUDA benchmarks, and every artifact at smoke scale on the GPU. Everything it prints also goes
# to $OUT/gpu_check.log.
#
# The device machine gets only this repository: before the call, copy the shared matrices
# into an ignored folder and carry it, e.g.
#   echo /.gpu-data/ >> .git/info/exclude; mkdir -p .gpu-data && cp -r ../shared/data/suitesparse .gpu-data/
# and carry wheels of what the machine lacks (pooch, platformdirs, psutil, tqdm, mlxtend,
# ssgetpy, PyWavelets) in .whl (see the device tool's README), installed into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export REPRO_MATRIX_DIRS="${REPRO_MATRIX_DIRS:-$PWD/.gpu-data/suitesparse}" REPRO_CACHE="$out/cache"
{
    status=0
    run() { echo "== $*"; "$@" || status=1; }
    run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    run python3 -m pytest -q -m cuda tests/methods/spmv/test_cuda.py tests/methods/spmv/test_regu2d.py -p no:cacheprovider
    run python3 -m pytest -q tests/benchmarks --benchmark-only --benchmark-group-by=param -p no:cacheprovider
    run python3 reproduce/hbp/correctness.py --scale quick --device cuda --out "$out/results" --no-progress
    run python3 reproduce/hbp/spmv.py --scale quick --device cuda --out "$out/results" --no-progress
    run python3 reproduce/hbp/preprocessing.py --scale quick --device cuda --out "$out/results" --no-progress
    run python3 reproduce/hbp/correctness.py --scale quick --device cuda-emu --out "$out/results" --no-progress
    run python3 tools/traffic_vs_time.py "$out/results" --scale quick
    if command -v nvcc > /dev/null; then run python3 tools/cuda_occupancy.py; fi
    run python3 -m reproduce report --results "$out/results" --reports "$out/reports"
    run python3 -m asv machine --yes --machine gpu
    run python3 -m asv run --python=same --quick --bench CudaSpmv --machine gpu --set-commit-hash HEAD
    # Every artifact's CUDA path (generators, dtypes, .to(device), peak memory) once on a real GPU.
    run python3 -m reproduce run all --scale smoke --device cuda --out "$out/results-smoke" --no-progress
    exit $status
} 2>&1 | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
