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

source benchmarks/_device_env.sh
if [ "${1:-run}" = prepare ]; then
    device_wheels
    exit $?
fi

OUT=${OUT:-/tmp/gpu-ddp-out}
mkdir -p "$OUT"
device_env || exit 1
python3 - <<'EOF'
import torch, torch.distributed as d
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s), "
      f"NCCL {'.'.join(map(str, torch.cuda.nccl.version())) if d.is_nccl_available() else 'absent'}")
EOF
python3 -m pytest -v -p no:cacheprovider -o addopts="" "${pytest_timeout[@]}" tests/test_cuda.py 2>&1 \
    | tee "$OUT/test_cuda.log"
status=$?
# the CPU DDP tests again (--device cpu, with the GPU visible), as a control for the CUDA ones
python3 -m pytest -q -p no:cacheprovider -o addopts="" "${pytest_timeout[@]}" tests/test_distributed.py \
    tests/test_stream.py 2>&1 | tee "$OUT/test_cpu_ddp.log" | tail -3
exit $status
