#!/usr/bin/env bash
# Every GPU measurement and GPU-only test of the project in one command, for a lent GPU machine whose
# time is short (benchmarks/gpu/README.md). Run from the repo root there, with .whl and
# .cache/test_corpus carried:
#
#     bash benchmarks/gpu/check.sh            # results in $OUT (or gpu_out/)
#
# Stages, most wanted first; each gets at most its own limit and never more than what is left of
# GPU_CHECK_SECONDS (default 540), so the command ends inside a 600 s call with its files written:
#   1. throughput + MFU (benchmarks/throughput.py): CPT 1.3B / 2.7B, pruning 7B, seq 4096   -> throughput.jsonl
#   2. the gpu-marked tests (bf16 masked = sliced, FSDP on one GPU, 2:4 semi-structured)      -> gpu_tests.log
#   3. mask overhead, LLaMA2-7B layer shape, bf16 (benchmarks/mask_overhead.py)              -> mask_overhead.jsonl
#   4. inference: LLaMA2-7B vs the pruned 2.7B / 1.3B shapes and 7B 2:4 semi-structured,
#      batch 1 and 16 (benchmarks/inference.py)                                             -> inference_b*.md/.jsonl
# then env.txt (device, driver, versions) and throughput.md (the rows for docs/BENCHMARKS.md).
#
# GPU_CHECK_SMOKE=1 runs the same stages with tiny shapes on whatever device there is (the CPU test
# of this script, tests/test_gpu_check.py); GPU_CHECK_WHEELS=none skips the wheel install (a venv that
# has everything); PYTHON picks the interpreter.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
DEADLINE=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-540} ))
SMOKE=${GPU_CHECK_SMOKE:-0}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

# shellcheck source=benchmarks/gpu/env.sh
source benchmarks/gpu/env.sh

# the seconds a stage may take: its own limit, or what is left before the deadline (minus 10 s to write up)
budget() {
    local left=$(( DEADLINE - $(date +%s) - 10 ))
    (( left < $1 )) && echo "$left" || echo "$1"
}

stage() {  # stage NAME LIMIT LOG COMMAND...: run COMMAND under its budget, its output also into LOG
    local name=$1 log=$3 limit; limit=$(budget "$2"); shift 3  # (LOG - : the terminal only)
    if (( limit < 20 )); then say "$name: skipped, no time left"; echo "$name: skipped (no time left)" >> "$OUT/stages.txt"; return; fi
    say "$name: start (limit ${limit}s)"
    local start=$SECONDS
    if [[ "$log" == - ]]; then
        timeout --kill-after=5 "$limit" "$@"
    else
        timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$log"
    fi
    local rc=${PIPESTATUS[0]}
    say "$name: rc=$rc in $(( SECONDS - start ))s"
    echo "$name: rc=$rc seconds=$(( SECONDS - start ))" >> "$OUT/stages.txt"
}

install_carried_wheels || exit 1
if [[ ! -f .cache/test_corpus/manifest.json ]]; then
    say "note: .cache/test_corpus is not here (carry it): the corpus-based gpu tests will fail to build it offline"
fi

"$PYTHON" - > "$OUT/env.txt" 2>&1 <<'PY'
import importlib.metadata as m, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
for name in ("mosaicml", "mosaicml-streaming", "transformers", "numpy", "flash-attn"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "not installed")
PY
command -v nvidia-smi > /dev/null && nvidia-smi >> "$OUT/env.txt" 2>&1
head -8 "$OUT/env.txt"

if [[ "$SMOKE" == 1 ]]; then
    SIZES=(--tiny --device cpu --seq-len 64 --steps 2 --warmup 1)
    RUNS=("cpt:tiny-target" "prune:tiny-source")
    MASKS=(--shape tiny --layers 1 --seq-len 32 --batch 1 --steps 1 --warmup 1)
    TESTS=(tests/test_gpu.py)
    INFER=(shape:tiny shape:tiny-target --device cpu --prompt-len 16 --new-tokens 4 --repeats 1)
    INFER_BATCHES=(1)
else
    SIZES=()
    RUNS=("cpt:sheared-1.3b" "cpt:sheared-2.7b" "prune:llama2-7b")
    MASKS=(--shape llama2-7b --layers 4 --device cuda --dtype bf16 --seq-len 4096 --batch 1)
    TESTS=(tests)
    INFER=(shape:llama2-7b shape:sheared-2.7b shape:sheared-1.3b shape:llama2-7b:2:4 --device cuda --dtype bf16
           --semi-structured --prompt-len 512 --new-tokens 128 --repeats 3)
    INFER_BATCHES=(1 16)
fi

for run in "${RUNS[@]}"; do  # one process a shape: a crash or a hang costs one row, not the rest
    stage "throughput $run" 150 - "$PYTHON" benchmarks/throughput.py "${SIZES[@]}" --runs "$run" --out "$OUT/throughput.jsonl"
done
stage "gpu tests" 240 "$OUT/gpu_tests.log" "$PYTHON" -m pytest -q -m gpu -rs -p no:cacheprovider "${TESTS[@]}"
stage "mask overhead" 120 "$OUT/mask_overhead.jsonl" "$PYTHON" benchmarks/mask_overhead.py "${MASKS[@]}"
for batch in "${INFER_BATCHES[@]}"; do
    stage "inference batch $batch" 90 - "$PYTHON" benchmarks/inference.py "${INFER[@]}" --batch "$batch" \
        --out "$OUT/inference_b$batch.jsonl" --markdown "$OUT/inference_b$batch.md"
done
"$PYTHON" benchmarks/gpu/table.py "$OUT/throughput.jsonl" > "$OUT/throughput.md" 2>&1
cat "$OUT/throughput.md"
say "done; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
