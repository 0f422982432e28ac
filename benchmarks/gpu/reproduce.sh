#!/usr/bin/env bash
# The miniature reproduction (benchmarks/reproduce.py, docs/RESULTS.md) at a GPU budget, on a lent GPU
# machine, from the parts benchmarks/gpu/pack_reproduction.sh made (carried by earlier calls on the
# same warm machine; this call carries the last one):
#
#     bash benchmarks/gpu/reproduce.sh                # results in $OUT (or gpu_out/)
#
# It joins the parts, checks the payload's sha256, unpacks it into .cache/gpu_payload, installs the
# wheels (benchmarks/gpu/env.sh) and runs reproduce.py with --resume into .cache/gpu_repro, all of it
# within GPU_REPRO_SECONDS (540). Rows finished in an earlier call on this machine are kept; rows from
# another machine are picked up from .cache/gpu_repro/rows/ (carry it). $OUT gets results.md,
# results.json, eval_loss_vs_tokens.png, rows/ and the logs' tails, also when the time ran out.
#
# GPU_REPRO_TOKENS (2,000,000 training tokens a row), GPU_REPRO_BATCH (32 sequences a step),
# GPU_REPRO_SEQ_LEN (512), GPU_REPRO_ROWS (default all), GPU_REPRO_DEVICE (gpu), GPU_REPRO_EXTRA (more
# reproduce.py options, the last word wins); GPU_CARRY / GPU_REPRO_PAYLOAD / GPU_REPRO_OUT move the
# folders; GPU_CHECK_WHEELS=none skips the wheel install; PYTHON picks the interpreter.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
CARRY=${GPU_CARRY:-.cache/gpu_carry}
PAYLOAD=${GPU_REPRO_PAYLOAD:-.cache/gpu_payload}
REPRO=${GPU_REPRO_OUT:-.cache/gpu_repro}
DEADLINE=$(( $(date +%s) + ${GPU_REPRO_SECONDS:-540} ))  # joining, unpacking and installing count too
export PYTHONUNBUFFERED=1
# shellcheck source=benchmarks/gpu/env.sh
source benchmarks/gpu/env.sh

manifests=("$CARRY"/part*/payload.manifest)
[[ -f "${manifests[0]}" ]] || { say "error: no parts under $CARRY: run benchmarks/gpu/pack_reproduction.sh and carry them"; exit 2; }
parts=$(sed -n 's/^parts=//p' "${manifests[0]}")
sha=$(sed -n 's/^sha256=//p' "${manifests[0]}")
if [[ ! -f "$PAYLOAD/.sha256" || "$(cat "$PAYLOAD/.sha256")" != "$sha" ]]; then
    missing=()
    for ((i = 1; i <= parts; i++)); do
        compgen -G "$CARRY/part$i/payload.tar.*" > /dev/null || missing+=("$CARRY/part$i")
    done
    if (( ${#missing[@]} )); then
        say "error: missing parts ${missing[*]} of $parts: carry each in its own call first, on the same warm machine"
        exit 2
    fi
    say "joining $parts parts"
    rm -rf "$PAYLOAD" && mkdir -p "$PAYLOAD"
    joined=$PAYLOAD.tar
    for ((i = 1; i <= parts; i++)); do cat "$CARRY/part$i"/payload.tar.*; done > "$joined"
    got=$(sha256sum "$joined" | cut -d' ' -f1)
    if [[ "$got" != "$sha" ]]; then
        rm -f "$joined"
        say "error: the joined payload's sha256 is $got, the packed one's $sha: a part is stale or damaged; pack and carry again"
        exit 2
    fi
    tar -xf "$joined" -C "$PAYLOAD" && rm -f "$joined" || { say "error: unpacking the payload failed"; exit 2; }
    echo "$sha" > "$PAYLOAD/.sha256"
fi
if [[ -d "$PAYLOAD/whl" && "${GPU_CHECK_WHEELS:-}" != none ]]; then
    install_carried_wheels "$PAYLOAD/whl" || exit 1
else
    install_carried_wheels none
fi

read -r -a rows <<< "${GPU_REPRO_ROWS:-}"
read -r -a extra <<< "${GPU_REPRO_EXTRA:-}"
left=$(( DEADLINE - $(date +%s) - 15 ))  # 15 s to copy the results out
(( left > 30 )) || { say "error: no time left for the reproduction (GPU_REPRO_SECONDS)"; exit 124; }
say "reproduction into $REPRO (resuming finished rows), at most ${left}s"
timeout --kill-after=10 "$left" "$PYTHON" benchmarks/reproduce.py --resume --in-process \
    --source "$PAYLOAD/source.gguf" --data "$PAYLOAD/corpus" --out "$REPRO" --device "${GPU_REPRO_DEVICE:-gpu}" \
    --budget-tokens "${GPU_REPRO_TOKENS:-2000000}" --batch "${GPU_REPRO_BATCH:-32}" --seq-len "${GPU_REPRO_SEQ_LEN:-512}" \
    --prune-fraction 0.5 --calib-samples 256 --final-max-tokens 16384 --evals-per-stage 4 \
    ${rows[@]+--rows "${rows[@]}"} ${extra[@]+"${extra[@]}"}
rc=$?
say "reproduce.py: rc=$rc"
for name in results.md results.json eval_loss_vs_tokens.png; do
    [[ -f "$REPRO/$name" ]] && cp "$REPRO/$name" "$OUT/"
done
[[ -d "$REPRO/rows" ]] && cp -r "$REPRO/rows" "$OUT/"
mkdir -p "$OUT/logs"
for log in "$REPRO"/logs/*.log; do
    [[ -f "$log" ]] && tail -n 40 "$log" > "$OUT/logs/$(basename "$log")"
done
[[ -f "$OUT/results.md" ]] && cat "$OUT/results.md"
exit "$rc"
