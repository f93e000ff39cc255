#!/usr/bin/env bash
# Everything issue #5 asks of a GPU machine, in one call: the CUDA tests, the
# speed benchmark on CUDA, the README's accuracy job (and one MNIST fit) with
# the estimator's CUDA defaults, then the whole test suite, where
# device="auto" now means CUDA. Each step runs under its own time limit and
# the suite gets what is left of the budget, so one slow or broken step
# cannot take the others' time. Logs and result files go to $OUT (or
# ./gpu_out), the last lines of each log to stdout.
#
#     bash benchmarks/gpu_session.sh [MNIST_DIR] [SECONDS]
#
# MNIST_DIR holds t10k-{images-idx3,labels-idx1}-ubyte.gz (default
# ../shared/data); SECONDS is the whole budget (default 520).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
mnist=${1:-../shared/data}
budget=${2:-520}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# The tests look for MNIST beside the checkout.
if [ ! -e ../shared/data/t10k-images-idx3-ubyte.gz ]; then
    mkdir -p ../shared/data && cp "$mnist"/t10k-*.gz ../shared/data/ || true
fi

step() {  # step LIMIT LOG COMMAND...: run COMMAND under LIMIT seconds, log to $out/LOG
    local limit=$1 log=$2 started=$SECONDS
    shift 2
    echo "=== $log: $* (limit ${limit}s)"
    timeout "$limit" "$@" >>"$out/$log" 2>&1
    local rc=$?
    echo "=== $log: rc=$rc in $((SECONDS - started))s"
    tail -n "${TAIL:-20}" "$out/$log"
}

nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,driver_version --format=csv
python3 -c "import sys, torch, sklearn, numpy; print(sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'sklearn', sklearn.__version__, 'numpy', numpy.__version__,
torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"

step 100 cuda_tests.log python3 -m pytest tests/test_cuda.py -v -p no:cacheprovider
step 200 speed.log python3 benchmarks/speed.py --device cuda --repeats 3 --mnist-dir "$mnist"
cp benchmarks/results/speed_cuda.md "$out/" 2>/dev/null
step 90 accuracy.log python3 benchmarks/accuracy.py --datasets digits --seeds 3 \
    --only defaults KMeans GaussianMixture --mnist-dir "$mnist"
cp benchmarks/results/accuracy_digits.md "$out/accuracy_digits_cuda.md" 2>/dev/null
step 90 accuracy.log python3 benchmarks/accuracy.py --datasets mnist --seeds 1 \
    --only defaults --mnist-dir "$mnist"
cp benchmarks/results/accuracy_mnist.md "$out/accuracy_mnist_cuda.md" 2>/dev/null
left=$((budget - SECONDS))
TAIL=40 step $((left > 30 ? left : 30)) suite.log python3 -m pytest -n 12 -q -p no:cacheprovider
