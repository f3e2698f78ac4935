# Sourced by the scripts that run on a lent GPU machine (gpu_records.sh, gpu_ddp_checks.sh),
# from the repository root. `device_wheels` (run here, with pip) fetches what the device
# image lacks into .whl/; `device_env` (run there) installs from .whl/ only what that Python
# lacks, puts src/ on the path, prints the GPU and sets $pytest_timeout.

device_wheels() {  # here: the wheels for the device's Python 3.12 (pure Python)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d .whl platformdirs==4.3.6
}

device_env() {  # there
    local missing=() wheel name
    for wheel in .whl/*.whl; do  # only what this Python lacks: never shadow its own packages
        [ -e "$wheel" ] || continue
        name=$(basename "$wheel" | cut -d- -f1)
        python3 -c "import $name" 2>/dev/null || missing+=("$wheel")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        local site
        site=$(mktemp -d)  # a fresh folder: nothing left from an earlier call shadows anything
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$site" "${missing[@]}" || return 1
        export PYTHONPATH=$site
    fi
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    export GLOO_SOCKET_IFNAME=lo  # one host: gloo need not resolve the machine's hostname
    # the GPU-sharing tests need compute mode Default (a test and its workers share the GPU)
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode --format=csv,noheader
    # every CUDA test skips without a GPU, and skips count as passes: stop here instead
    python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "torch sees no CUDA GPU (torch $(python3 -c 'import torch; print(torch.__version__)')): nothing to check" >&2
        return 1
    }
    # a stuck collective would otherwise wait out gloo's 30-minute default and the lease
    pytest_timeout=()
    if python3 -c "import pytest_timeout" 2>/dev/null; then
        pytest_timeout=(--timeout 150)
    fi
}
