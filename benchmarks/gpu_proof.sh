#!/usr/bin/env bash
# The GPU proof of plugins/ in one call on a lent GPU machine (H100/H200, CUDA 13 nvcc with
# compute-sanitizer, torch cu130, no TensorRT library, no network; only the repository travels).
#
#   1. builds libs2trt_kernels.so for the card it finds (nvidia-smi --query-gpu=compute_cap), and the
#      TensorRT plugin + its harness where TensorRT headers are given;
#   2. runs the GPU-marked tests (S2TRT_REQUIRE_GPU=1: a missing GPU fails them instead of skipping);
#   3. runs compute-sanitizer memcheck and racecheck on the kernels (split attention, eager and
#      replayed from a CUDA graph, and the letterbox kernel) and on the harness; where the sanitizer
#      cannot start on that machine it is reported, not failed;
#   4. runs the kernel benchmark (programmatic launch on and off, the letterbox kernel) and the runtime
#      benchmark that needs no TensorRT;
#   5. writes every figure with the card's name to $OUT/gpu_proof_results.md (logs in $OUT/logs/) and
#      prints the same Markdown block, ready for benchmarks/RESULTS.md.
# Without a GPU it says so and exits 2 at once. Exit 1 when a step failed, 0 otherwise.
#
# TensorRT headers (NVIDIA/TensorRT's include/, not committed): copy one version into the ignored
# folder .trt-headers/ before the device call, and name that folder in the call's carry:
#     mkdir -p .trt-headers/v10.16 && cp -r ../shared/trt-headers/v10.16/include .trt-headers/v10.16/
#     run(command="bash benchmarks/gpu_proof.sh", carry=[".trt-headers"], timeout_s=600)
# or point TRT_HEADERS at an include/ folder. Without headers steps that need them are skipped.
#
# Designed for one 10-minute call: every step has its own timeout and the whole run a budget
# (GPU_PROOF_BUDGET seconds, default 540); a step that no longer fits is skipped and says so. Order:
# build, GPU tests, memcheck, kernel benchmarks, racecheck, runtime benchmark.
set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
START=$SECONDS
BUDGET=${GPU_PROOF_BUDGET:-540}

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_proof: no NVIDIA GPU here (nvidia-smi not found); nothing was run" >&2
    exit 2
fi
if ! GPU_INFO=$(timeout 30 nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total \
        --format=csv,noheader 2>&1); then
    echo "gpu_proof: no NVIDIA GPU here (nvidia-smi failed: $(printf '%s\n' "$GPU_INFO" | head -n 1));" \
        "nothing was run" >&2
    exit 2
fi
GPU_INFO=$(printf '%s\n' "$GPU_INFO" | grep ',' | head -n 1)
if [ -z "$GPU_INFO" ]; then
    echo "gpu_proof: no NVIDIA GPU here (nvidia-smi lists none); nothing was run" >&2
    exit 2
fi
IFS=',' read -r CARD CAP DRIVER MEMORY <<<"$GPU_INFO"
CARD=$(echo "$CARD" | xargs)
CAP=$(echo "$CAP" | xargs)
DRIVER=$(echo "$DRIVER" | xargs)
MEMORY=$(echo "$MEMORY" | xargs)
ARCH=${CAP//./}

OUT=${OUT:-$ROOT/build/gpu-proof-out}
WORK=${GPU_PROOF_WORK:-$ROOT/build/gpu-proof}
LOGS=$OUT/logs
BUILD=$WORK/plugins
mkdir -p "$LOGS" "$WORK"
RESULTS=$OUT/gpu_proof_results.md
SUMMARY=$WORK/summary.md
FIGURES=$WORK/figures.md
: >"$SUMMARY"
: >"$FIGURES"
FAILED=0

NVCC=${CUDACXX:-$(command -v nvcc || true)}
for candidate in /usr/local/cuda/bin/nvcc /usr/local/cuda-13*/bin/nvcc; do
    [ -n "$NVCC" ] && break
    [ -x "$candidate" ] && NVCC=$candidate
done
SANITIZER=$(command -v compute-sanitizer || true)
if [ -z "$SANITIZER" ] && [ -n "$NVCC" ] && [ -x "$(dirname "$NVCC")/compute-sanitizer" ]; then
    SANITIZER=$(dirname "$NVCC")/compute-sanitizer
fi
HEADERS=${TRT_HEADERS:-}
if [ -z "$HEADERS" ]; then
    for candidate in "$ROOT"/.trt-headers/*/include; do
        [ -f "$candidate/NvInferRuntime.h" ] && HEADERS=$candidate && break
    done
fi
PYTHON=${PYTHON:-python3}

left() {
    echo $((BUDGET - (SECONDS - START)))
}

# record STEP RESULT SECONDS DETAIL: one row of the summary; a FAIL makes the exit status 1.
record() {
    printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"
    echo "gpu_proof: $1: $2 ($3 s) $4"
    if [ "$2" = FAIL ]; then
        FAILED=1
    fi
}

# step NAME TIMEOUT COMMAND...: runs COMMAND with its output in $LOGS/NAME.log, under TIMEOUT seconds
# or what is left of the budget; sets STEP_RC (124/137: timed out, 125: skipped for the budget, 126:
# stopped at the end of the budget before its own timeout).
step() {
    local name=$1 limit=$2 t0 remaining cut=0
    shift 2
    remaining=$(($(left) - 5))
    if [ "$remaining" -lt 20 ]; then
        STEP_RC=125
        STEP_SECONDS=0
        return
    fi
    if [ "$limit" -gt "$remaining" ]; then
        limit=$remaining
        cut=1
    fi
    t0=$SECONDS
    echo "gpu_proof: $name (at most $limit s)"
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    STEP_RC=$?
    STEP_SECONDS=$((SECONDS - t0))
    if [ "$cut" = 1 ] && { [ "$STEP_RC" = 124 ] || [ "$STEP_RC" = 137 ]; }; then
        STEP_RC=126
    fi
}

# verdict NAME [DETAIL]: the usual reading of STEP_RC for a step whose non-zero exit is a failure.
# Running out of the whole budget is reported, not failed: the step itself did nothing wrong.
verdict() {
    case $STEP_RC in
        0) record "$1" PASS "$STEP_SECONDS" "${2:-}" ;;
        124 | 137) record "$1" FAIL "$STEP_SECONDS" "timed out (logs/$1.log)" ;;
        125) record "$1" SKIP 0 "no time left in the ${BUDGET} s budget" ;;
        126) record "$1" CUT "$STEP_SECONDS" "stopped at the end of the ${BUDGET} s budget (logs/$1.log)" ;;
        *) record "$1" FAIL "$STEP_SECONDS" "exit $STEP_RC: $(tail -n 1 "$LOGS/$1.log" | cut -c1-160)" ;;
    esac
}

# ---- Python: the project importable without touching the network --------------------------------------
setup_python() {
    if "$PYTHON" -c 'import s2trt.trt' >/dev/null 2>&1; then
        return 0
    fi
    local venv=$WORK/venv
    if "$PYTHON" -m venv --system-site-packages "$venv" \
        && "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation --no-index -e "$ROOT" \
        && "$venv/bin/python" -c 'import s2trt.trt'; then
        PYTHON=$venv/bin/python
        return 0
    fi
    # No setuptools to install with: the import package as links to the top-level folders
    # (pyproject.toml's package-dir), on PYTHONPATH.
    local src=$WORK/src
    rm -rf "$src"
    mkdir -p "$src"
    "$PYTHON" - "$ROOT" "$src" <<'PY' || return 1
import os, sys, tomllib
root, src = sys.argv[1:]
dirs = tomllib.load(open(os.path.join(root, "pyproject.toml"), "rb"))["tool"]["setuptools"]["package-dir"]
top = os.path.join(src, "s2trt")
os.makedirs(top)
for name in os.listdir(os.path.join(root, dirs["s2trt"])):
    os.symlink(os.path.join(root, dirs["s2trt"], name), os.path.join(top, name))
for package, folder in dirs.items():
    if package != "s2trt":
        os.symlink(os.path.join(root, folder), os.path.join(top, package.split(".", 1)[1]))
PY
    export PYTHONPATH=$src${PYTHONPATH:+:$PYTHONPATH}
    "$PYTHON" -c 'import s2trt.trt'
}

t0=$SECONDS
if setup_python >"$LOGS/python.log" 2>&1; then
    record "python setup" PASS $((SECONDS - t0)) "$("$PYTHON" --version 2>&1), s2trt from $("$PYTHON" -c \
        'import s2trt, os; print(os.path.dirname(s2trt.__file__))' 2>&1)"
else
    record "python setup" FAIL $((SECONDS - t0)) "s2trt not importable (logs/python.log)"
fi
VERSIONS=$("$PYTHON" - 2>/dev/null <<'PY'
import importlib
parts = []
for name in ("torch", "cupy", "onnxruntime", "cv2", "numpy"):
    try:
        module = importlib.import_module(name)
        parts.append(f"{name} {module.__version__}")
    except Exception:
        parts.append(f"{name} absent")
try:
    import torch
    parts.append(f"torch CUDA {torch.version.cuda}")
except Exception:
    pass
print(", ".join(parts))
PY
)
NVCC_VERSION=$([ -n "$NVCC" ] && "$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')

# ---- 1. build -------------------------------------------------------------------------------------------
KERNELS_OK=0
HARNESS_OK=0
if [ -z "$NVCC" ] || ! command -v cmake >/dev/null 2>&1; then
    record "build" FAIL 0 "needs nvcc and cmake (nvcc: ${NVCC:-none})"
else
    # A build folder kept from an earlier call keeps its cache: every choice is passed again (an empty
    # TENSORRT_INCLUDE_DIR turns the plugin off), and nothing it built before counts unless rebuilt now.
    definitions=(-DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH"
        -DTENSORRT_INCLUDE_DIR="$HEADERS" -DS2TRT_WERROR=ON)
    rm -f "$BUILD/libs2trt_kernels.so" "$BUILD/libs2trt_plugins.so" "$BUILD/s2sa_harness"
    step configure 60 cmake -S "$ROOT/plugins" -B "$BUILD" "${definitions[@]}"
    verdict configure
    if [ "$STEP_RC" = 0 ]; then
        step build 240 cmake --build "$BUILD" -j "$(nproc)"
        verdict build
        [ -f "$BUILD/libs2trt_kernels.so" ] && KERNELS_OK=1
        [ -x "$BUILD/s2sa_harness" ] && [ -f "$BUILD/libs2trt_plugins.so" ] && HARNESS_OK=1
    fi
    if [ -z "$HEADERS" ]; then
        record "build: plugin + harness" SKIP 0 "no TensorRT headers (.trt-headers/<tag>/include or TRT_HEADERS)"
    fi
fi

# ---- 2. GPU-marked tests --------------------------------------------------------------------------------
if [ "$KERNELS_OK" = 1 ]; then
    mapfile -t GPU_TESTS < <(grep -rl --include='test_*.py' 'mark\.gpu' "$ROOT"/tests)
    step gpu-tests 240 env S2TRT_REQUIRE_GPU=1 S2TRT_PLUGIN_BUILD="$BUILD" \
        TENSORRT_INCLUDE_DIRS="$HEADERS" CUDACXX="$NVCC" "$PYTHON" -m pytest -q -m 'gpu and not tensorrt' \
        -p no:cacheprovider -rs "${GPU_TESTS[@]}"
    verdict gpu-tests "$(tail -n 1 "$LOGS/gpu-tests.log" | tr -d '=' | xargs)"
else
    record gpu-tests SKIP 0 "no kernels library was built"
fi

# ---- 3. compute-sanitizer -------------------------------------------------------------------------------
DRIVER_PY=$WORK/sanitize_kernels.py
cat >"$DRIVER_PY" <<'PY'
"""A few launches of every kernel for compute-sanitizer: the split attention (FP32/FP16, partial tiles,
element-wise and packed paths, eager and replayed from a CUDA graph, checked against each other) and
the letterbox kernel (sizes from 1x77 to 1080p, FP32 and FP16, two launches of 16 frames)."""
import ctypes
import sys

import numpy as np
import torch

lib = ctypes.CDLL(sys.argv[1])
lib.s2sa_workspace_size.restype = ctypes.c_size_t
lib.s2sa_workspace_size.argtypes = [ctypes.c_int, ctypes.c_int]
lib.s2sa_forward.argtypes = ([ctypes.c_void_p] * 6 + [ctypes.c_int] * 5
                             + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p])
lib.s2pp_letterbox.argtypes = ([ctypes.c_void_p] * 4 + [ctypes.c_int, ctypes.c_void_p] + [ctypes.c_int] * 5
                               + [ctypes.c_void_p])
rng = np.random.default_rng(0)
stream = torch.cuda.Stream()


def dev(a):
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def attention(b, c, h, w, dtype):
    xs = [dev(rng.standard_normal((b, c, h, w)).astype(dtype)) for _ in range(3)]
    w1 = dev((rng.standard_normal((c, c)) / c).astype(np.float32))
    w2 = dev((rng.standard_normal((3 * c, c)) / c ** 0.5).astype(np.float32))
    size = lib.s2sa_workspace_size(b, c)
    ws = dev(np.zeros(size, np.uint8))
    code = 1 if dtype == np.float16 else 0
    eager, replayed = (dev(np.zeros((b, c, h, w), dtype)) for _ in range(2))
    torch.cuda.synchronize()

    def forward(out):
        status = lib.s2sa_forward(*(x.data_ptr() for x in xs), out.data_ptr(), w1.data_ptr(), w2.data_ptr(),
                                  b, c, h, w, code, ws.data_ptr(), size,
                                  torch.cuda.current_stream().cuda_stream)
        assert status == 0, status

    with torch.cuda.stream(stream):
        forward(eager)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        forward(replayed)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(eager, replayed), "graph replay differs from the eager forward"


def letterbox(shapes, dtype):
    frames = [dev(rng.integers(0, 256, (fh, fw, 3), dtype=np.uint8)) for fh, fw in shapes]
    n = len(frames)
    out = dev(np.zeros((n, 3, 640, 640), dtype))
    torch.cuda.synchronize()
    status = lib.s2pp_letterbox((ctypes.c_void_p * n)(*(f.data_ptr() for f in frames)),
                                (ctypes.c_int * n)(*(s[0] for s in shapes)),
                                (ctypes.c_int * n)(*(s[1] for s in shapes)), None, n, out.data_ptr(),
                                640, 640, 1 if dtype == np.float16 else 0, 114, 1, stream.cuda_stream)
    assert status == 0, status
    torch.cuda.synchronize()
    assert torch.isfinite(out.float()).all()


attention(3, 64, 5, 7, np.float32)
attention(9, 32, 20, 20, np.float16)
attention(5, 128, 4, 8, np.float32)
FRAMES = [(1080, 1920), (37, 53), (1, 77), (91, 1), (480, 640)]
FRAMES += [(13 + 7 * i, 91 - 4 * i) for i in range(12)]
letterbox(FRAMES, np.float32)
letterbox(FRAMES, np.float16)
print("kernels ran")
PY

# sanitize NAME TOOL TIMEOUT COMMAND...: a finding fails; a sanitizer that cannot start is reported.
sanitize() {
    local name=$1 tool=$2 limit=$3 log summary
    shift 3
    log=$LOGS/$name.log
    step "$name" "$limit" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --error-exitcode 3 \
        --print-limit 20 "$@"
    summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -n 1)
    case $STEP_RC in
        125) record "$name" SKIP 0 "no time left in the ${BUDGET} s budget" ;;
        126) record "$name" CUT "$STEP_SECONDS" "stopped at the end of the ${BUDGET} s budget (logs/$name.log)" ;;
        124 | 137) record "$name" FAIL "$STEP_SECONDS" "timed out (logs/$name.log)" ;;
        0) record "$name" PASS "$STEP_SECONDS" "$summary" ;;
        *)
            if [ -n "$summary" ]; then
                record "$name" FAIL "$STEP_SECONDS" \
                    "exit $STEP_RC: $summary; $(grep -v '^=====' "$log" | tail -n 1 | cut -c1-160)"
            else
                record "$name" "NOT RUN" "$STEP_SECONDS" \
                    "sanitizer could not start: $(grep -m 1 -iE 'error|unable|not supported' "$log" | cut -c1-160)"
            fi
            ;;
    esac
}

# sanitize_all TOOL: the kernels, then the harness, under one compute-sanitizer tool.
sanitize_all() {
    if [ -z "$SANITIZER" ]; then
        record "$1" "NOT RUN" 0 "compute-sanitizer not found next to nvcc or on PATH"
        return
    fi
    [ "$KERNELS_OK" = 1 ] || return
    sanitize "$1-kernels" "$1" 120 "$PYTHON" "$DRIVER_PY" "$BUILD/libs2trt_kernels.so"
    if [ "$HARNESS_OK" = 1 ]; then
        sanitize "$1-harness" "$1" 90 "$BUILD/s2sa_harness" "$BUILD/libs2trt_plugins.so"
    else
        record "$1-harness" SKIP 0 "no harness (needs TensorRT headers)"
    fi
}

# ---- 4. benchmarks --------------------------------------------------------------------------------------
# bench NAME TIMEOUT ARGS...: a benchmark's figures (its Markdown tables, or its whole report) go into
# the results.
bench() {
    local name=$1 limit=$2 shown
    shift 2
    shown="$*"
    step "$name" "$limit" "$PYTHON" "$@"
    verdict "$name"
    if [ "$STEP_RC" = 0 ]; then
        {
            echo
            echo "#### \`python ${shown//$ROOT\//}\`"
            echo
            if grep -q '^|' "$LOGS/$name.log"; then
                grep -E '^\||^[A-Za-z0-9].*(GB/s|PDL|OpenCV)' "$LOGS/$name.log"
            else
                echo '```text'
                cat "$LOGS/$name.log"
                echo '```'
            fi
        } >>"$FIGURES"
    fi
}

# In order of what a short budget should keep: correctness first, then the kernel figures, then the
# slower race check and the runtime benchmark.
sanitize_all memcheck
if [ "$KERNELS_OK" = 1 ]; then
    bench bench-kernel 120 benchmarks/bench_kernel.py --lib "$BUILD/libs2trt_kernels.so" --no-compile
    bench bench-kernel-no-pdl 90 benchmarks/bench_kernel.py --lib "$BUILD/libs2trt_kernels.so" --no-compile \
        --no-pdl
    bench bench-letterbox 90 benchmarks/bench_kernel.py --lib "$BUILD/libs2trt_kernels.so" --preprocess \
        --frames 8 --frame-size 1080 1920
fi
sanitize_all racecheck
if "$PYTHON" -c 'import onnxruntime, onnx, torch' >/dev/null 2>&1; then
    bench bench-runtime 150 benchmarks/bench_runtime.py --repeats 1
else
    record bench-runtime SKIP 0 "needs onnxruntime, onnx and torch to export and run the demo model"
fi

# ---- 5. results -----------------------------------------------------------------------------------------
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "unknown commit")
{
    echo "## GPU proof on ${CARD} (sm_${ARCH}) — $(date -u +%Y-%m-%d)"
    echo
    echo "Machine: ${CARD}, compute capability ${CAP}, ${MEMORY}, driver ${DRIVER}, nvcc ${NVCC_VERSION:-none};" \
        "${VERSIONS:-python packages unknown}; $(nproc) CPUs. Commit ${COMMIT}." \
        "TensorRT headers: ${HEADERS:-none}. Command: \`bash benchmarks/gpu_proof.sh\`" \
        "($((SECONDS - START)) s of a ${BUDGET} s budget)."
    echo
    echo "| step | result | s | detail |"
    echo "|---|---|---|---|"
    cat "$SUMMARY"
    cat "$FIGURES"
} >"$RESULTS"
echo
echo "----- Markdown for benchmarks/RESULTS.md (also in $RESULTS) -----"
cat "$RESULTS"
exit "$FAILED"
