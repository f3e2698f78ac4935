#!/usr/bin/env bash
# Issue 11's GPU paths, in one call of the device tool (a few minutes on one H200):
# DDP on CUDA tensors, SyncBatchNorm on CUDA, the mixed NCCL + gloo process group, and
# `--data-memory stream` copying from pinned memory. The tests are tests/test_cuda.py
# (skipped on machines without CUDA); this script only prepares and runs them there.
#
#   here (with pip):   bash benchmarks/gpu_ddp_checks.sh prepare
#   there (the GPU):   run(command="bash benchmarks/gpu_ddp_checks.sh", carry=[".whl"],
#                          timeout_s=420)
#
# `prepare` downloads, as wheels for the device's Python 3.12, the dependencies of cnnlab
# that the device image lacks (see KINDS.md's package list); they travel in .whl/ (ignored
# by git). The device's own PyTorch is used, so the figures name its version.
# A single GPU runs every check except two processes on two GPUs with NCCL, which the
# test skips with its reason; the one-GPU tests share the GPU between ranks with gloo.
# benchmarks/gpu_records.sh's mnist part runs the same CUDA tests: run one or the other.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-run}" = prepare ]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d .whl platformdirs==4.3.6
    exit $?
fi

OUT=${OUT:-/tmp/gpu-ddp-out}
mkdir -p "$OUT"
missing=()
for wheel in .whl/*.whl; do  # only what this Python lacks: never shadow its own packages
    [ -e "$wheel" ] || continue
    name=$(basename "$wheel" | cut -d- -f1)
    python3 -c "import $name" 2>/dev/null || missing+=("$wheel")
done
if [ ${#missing[@]} -gt 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "${missing[@]}" || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GLOO_SOCKET_IFNAME=lo  # one host: gloo need not resolve the machine's hostname
# the sharing tests need compute mode Default (the test process and its workers share the GPU)
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode --format=csv,noheader
# a stuck collective would otherwise wait out gloo's 30-minute default and the whole lease
timeout=()
python3 -c "import pytest_timeout" 2>/dev/null && timeout=(--timeout 150)
python3 - <<'EOF'
import torch, torch.distributed as d
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s), "
      f"NCCL {'.'.join(map(str, torch.cuda.nccl.version())) if d.is_nccl_available() else 'absent'}")
EOF
python3 -m pytest -v -p no:cacheprovider -o addopts="" "${timeout[@]}" tests/test_cuda.py 2>&1 \
    | tee "$OUT/test_cuda.log"
status=$?
# the CPU DDP tests again (--device cpu, with the GPU visible), as a control for the CUDA ones
python3 -m pytest -q -p no:cacheprovider -o addopts="" "${timeout[@]}" tests/test_distributed.py \
    tests/test_stream.py 2>&1 | tee "$OUT/test_cpu_ddp.log" | tail -3
exit $status
