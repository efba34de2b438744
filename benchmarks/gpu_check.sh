#!/usr/bin/env bash
# One self-contained GPU check: build, CUDA tests on the real GPU, the torch Gaussian
# micro-benchmark, the support mask on the GPU, live latency per frame on the GPU, and the throughput benchmark of
# the default detector (2048², 8192², 32768²) with the CUDA-vs-C++ kernel comparison.
# At most 7 files land in $OUT (the device tool returns 8).
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
S="$OUT/summary.txt"
stamp() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$S"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  nproc
  $PY -c "import sys, torch, numba, numpy; print(sys.version); print('torch', torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''); print('numba', numba.__version__, 'numpy', numpy.__version__)"
  $PY -c "from numba import cuda; print('numba.cuda available:', cuda.is_available())" 2>&1
  for m in cupy scipy skimage tifffile zarr trackpy pandas; do
    $PY -c "import $m; print('$m', getattr($m, '__version__', '?'))" 2>/dev/null || echo "$m: missing"
  done
} >> "$S" 2>&1
stamp "env done"

# Build: install (C++ extension via CMake); fall back to an in-place build.
if timeout 120 $PY -m pip install --no-build-isolation --no-deps -q . > /tmp/install.log 2>&1; then
  stamp "pip install ok"
else
  stamp "pip install failed; trying build_ext --inplace"; tail -n 20 /tmp/install.log >> "$S"
  timeout 120 $PY setup.py -q build_ext --inplace >> /tmp/install.log 2>&1 || stamp "build_ext failed"
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
cd /tmp  # import the installed package, not ./src
R="$OLDPWD"
$PY -c "import fastsac, fastsac._backend as b; print('fastsac', fastsac.__file__); print({k.value: b.unavailable_reason(k) or 'ok' for k in b.Backend if k.value != 'auto'})" >> "$S" 2>&1

# CUDA tests on the real GPU (numba kernels + the classical score map on torch CUDA).
timeout 100 $PY -m pytest "$R/tests/cuda" "$R/tests/models/test_classical_net.py" \
  "$R/tests/support/test_mask_torch.py" "$R/tests/infer" -q -rs -p no:cacheprovider \
  --rootdir "$R" -c "$R/pyproject.toml" > "$OUT/pytest_cuda.log" 2>&1
stamp "pytest cuda rc=$? ($(tail -n 1 "$OUT/pytest_cuda.log"))"

timeout 40 $PY "$R/benchmarks/bench_torch_gaussian.py" --device cuda > "$OUT/gauss.log" 2>&1
stamp "torch gaussian rc=$?"; cat "$OUT/gauss.log" >> "$S"

# The support mask alone, CPU vs GPU (2048² frame with vacuum), with a profile.
timeout 60 $PY "$R/benchmarks/profile_mask_gpu.py" --device cuda > "$OUT/mask_gpu.log" 2>&1
stamp "mask rc=$?"; grep "support_mask" "$OUT/mask_gpu.log" >> "$S"

# Live latency per frame, default detector and support mask on the GPU; without the mask.
( timeout 70 $PY "$R/benchmarks/bench_live.py" --device cuda --sizes 1024 2048 4096 --repeat 9 --json "$OUT/live_gpu.json"
  timeout 30 $PY "$R/benchmarks/bench_live.py" --device cuda --sizes 2048 --repeat 9 --no-mask --json "$OUT/live_gpu.json"
) > "$OUT/live_gpu.log" 2>&1
stamp "live done"; grep -E "^ +[0-9]+ " "$OUT/live_gpu.log" >> "$S"

# Throughput of the default detector (GPU-resident, and streamed for comparison): 2048²,
# 8192², 32768²; kernels CUDA vs C++; baselines.
timeout 180 $PY "$R/benchmarks/throughput.py" --device cuda --size 2048 8192 32768 \
  --json "$OUT/throughput_gpu.json" > "$OUT/throughput_gpu.log" 2>&1
stamp "throughput rc=$?"
grep -v "INFO" "$OUT/throughput_gpu.log" | tail -n 40 >> "$S"
stamp "done"
