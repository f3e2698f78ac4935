#!/usr/bin/env bash
# Issue 13's GPU figures in two calls of the device tool (the data of both parts together is
# over the 64 MiB a call may carry). Each part prints a short table last and writes its logs
# and JSON under $OUT.
#
#   here, once:   bash benchmarks/gpu_records.sh prepare DATA   # DATA: ../shared/data
#   call 1:       run(command="bash benchmarks/gpu_records.sh mnist",
#                     carry=[".whl", ".carry-mnist"], timeout_s=360)
#   call 2:       run(command="bash benchmarks/gpu_records.sh cifar",
#                     carry=[".whl", ".carry-cifar"], timeout_s=330)
# Make call 2 within 30 s of call 1's answer (the machine is then still warm: no second
# start), then give_back. Estimated on an H200: mnist 4-5 min, cifar 3.5-4.5 min.
# Do not also run gpu_ddp_checks.sh: the mnist part runs the same tests/test_cuda.py.
#
# mnist: mnist-fast x 5 seeds, d2l LeNet and seed-mnist examples/s, the CUDA-graph check
#        against eager SGD, `cnnlab serve` on the GPU under load (batching on and off; its
#        extra's wheels travel in .carry-mnist/serve-wheels), then the CUDA tests (issue
#        11's DDP/SyncBN/stream paths and the sync-free epoch check), last and time-boxed.
# cifar: the public airbench package's airbench94 and cnnlab's cifar-fast, 5 seeds each, in
#        one process on the same GPU, with the time ratio; then cifar-res x 3 seeds.
# The d2l modern-CNN runs at d2l's settings (224x224, 10 epochs each) do not fit the
# 15 minutes of device time a session has; they are not in here.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/_device_env.sh
part=${1:-}

if [ "$part" = prepare ]; then
    data=${2:?give the data root, e.g. ../shared/data}
    rm -rf .whl .carry-mnist .carry-cifar && mkdir -p .whl .carry-mnist .carry-cifar
    device_wheels || exit 1  # what the device image lacks; airbench is built from its sdist
    python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl airbench==0.1.8 || exit 1
    cp -r "$data/mnist" "$data/fashion-mnist" .carry-mnist/
    cp -r "$data/cifar10-jpeg" .carry-cifar/
    # the serve extra, a consistent set for Python 3.12 (installed apart, for that step only)
    python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d .carry-mnist/serve-wheels fastapi==0.115.6 uvicorn==0.32.1 \
        python-multipart==0.0.20 || exit 1
    du -sh .whl .carry-mnist .carry-cifar
    echo "tracked files: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes" \
         "(each call carries them too; the limit is 67108864)"
    exit 0
fi
case "$part" in
    mnist) data=.carry-mnist ;;
    cifar) data=.carry-cifar ;;
    *) echo "usage: $0 prepare DATA | mnist | cifar" >&2; exit 2 ;;
esac
[ -d "$data" ] || { echo "$data is missing: run '$0 prepare DATA' here and carry it" >&2; exit 2; }

OUT=${OUT:-/tmp/gpu-records-out}
mkdir -p "$OUT"
device_env || exit 1

step() {  # NAME CMD...: run, keep the log in $OUT, and say how it ended
    local name=$1
    shift
    "$@" 2>&1 | tee "$OUT/$name.log"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

if [ "$part" = mnist ]; then
    step mnist python3 benchmarks/gpu.py mnist --data-dir "$data" --seeds 5 --out "$OUT"
    step graphs python3 benchmarks/gpu.py graphs-check --data-dir "$data"
    serve_path=""
    if ! python3 -c "import fastapi, uvicorn, multipart" 2>/dev/null; then
        serve_site=$(mktemp -d)
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$serve_site" "$data"/serve-wheels/*.whl && serve_path=$serve_site:
    fi
    step serve env PYTHONPATH="$serve_path$PYTHONPATH" python3 benchmarks/serve_load.py \
        --data-dir "$data" --device cuda --seconds 8 --rounds 1
    # last, and boxed: a stuck collective must not eat the figures above
    step test_cuda timeout 180 python3 -m pytest -v -p no:cacheprovider -o addopts="" \
        "${pytest_timeout[@]}" tests/test_cuda.py
    echo "== summary"
    grep -hE "passed|failed|mnist-fast:|d2l-lenet|seed-mnist:|graphs-check|batching on /|== " \
        "$OUT"/mnist.log "$OUT"/graphs.log "$OUT"/serve.log "$OUT"/test_cuda.log
else
    step cifar-fast python3 benchmarks/gpu.py cifar --data-dir "$data" --reference --seeds 5 \
        --out "$OUT"
    mkdir -p "$OUT/res"
    step cifar-res python3 benchmarks/gpu.py cifar --data-dir "$data" --recipe cifar-res \
        --seeds 3 --out "$OUT/res"
    echo "== summary"
    grep -hE "decoded|reference|vs airbench94|: mean acc" "$OUT"/cifar-fast.log \
        "$OUT"/cifar-res.log
fi
