#!/usr/bin/env bash
# One self-contained GPU check (< 8 min worst case by its timeouts; 102 s on an H200): build, CUDA tests on the real GPU,
# throughput benchmark (GPU pipeline + CUDA-vs-C++ kernels). Everything lands in $OUT.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Needs: python3 with torch (CUDA), numba (+numba-cuda), pybind11, cmake, ninja.
# Optional baselines (trackpy, scikit-image, zarr, tifffile) are skipped when missing.
set -u
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
T0=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.txt"; }

{
  nvidia-smi || true
  $PY -c "import sys, torch, numba, numpy; print(sys.version); print('torch', torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''); print('numba', numba.__version__, 'numpy', numpy.__version__)"
  $PY -c "from numba import cuda; print('numba.cuda available:', cuda.is_available()); cuda.detect()" 2>&1
  for m in cupy scipy skimage tifffile zarr trackpy pandas psutil; do
    $PY -c "import $m; print('$m', getattr($m, '__version__', '?'))" 2>/dev/null || echo "$m: missing"
  done
} > "$OUT/env.txt" 2>&1
stamp "env done"

# Build: install (C++ extension via CMake); fall back to an in-place build.
if timeout 150 $PY -m pip install --no-build-isolation --no-deps -q . > "$OUT/install.log" 2>&1; then
  stamp "pip install ok"
else
  stamp "pip install failed; trying build_ext --inplace"
  timeout 150 $PY setup.py -q build_ext --inplace >> "$OUT/install.log" 2>&1 || stamp "build_ext failed (C++ kernels unavailable)"
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -c "import fastsac, fastsac._backend as b; print('fastsac', fastsac.__file__); print({k.value: b.unavailable_reason(k) or 'ok' for k in b.Backend if k.value != 'auto'})" >> "$OUT/summary.txt" 2>&1

# CUDA tests on the real GPU: parity (all of tests/cuda) including the gpu-marked ones.
timeout 120 $PY -m pytest tests/cuda -q -rs -p no:cacheprovider > "$OUT/pytest_cuda.log" 2>&1
stamp "pytest tests/cuda rc=$? ($(tail -n 1 "$OUT/pytest_cuda.log"))"

# Throughput: 2048², 8192², 32768² montage on the GPU; kernel comparison; baselines.
timeout 190 $PY benchmarks/throughput.py --device cuda --size 2048 8192 32768 \
  --json "$OUT/throughput_gpu.json" > "$OUT/throughput_gpu.log" 2>&1
stamp "throughput rc=$?"
tail -n 30 "$OUT/throughput_gpu.log"
stamp "done"
