#!/usr/bin/env bash
# Pack what the GPU-budget reproduction (benchmarks/gpu/reproduce.sh) needs on the lent GPU machine:
# the source model (SmolLM2's 98 MB GGUF), a corpus with 512-token samples and the wheels. A device
# call carries at most 64 MiB, so the payload is one tar split into parts of at most PART_MIB (60)
# MiB, each in its own folder .cache/gpu_carry/partN, carried by one call each on a warm machine
# (git-ignored paths stay there between calls). Run on the CPU machine, from anywhere:
#
#     benchmarks/gpu/pack_reproduction.sh        # prints the device calls to make
#
# GPU_REPRO_SOURCE: the model (default: SmolLM2's GGUF); GPU_REPRO_CORPUS: the corpus folder (built with
# 512-token samples when missing); GPU_REPRO_WHEELS: the wheel folder (default .whl, built by
# fetch_wheels.sh when missing; "none": no wheels, for a machine that has the packages); GPU_CARRY: where
# the parts go (default .cache/gpu_carry); PYTHON: the interpreter with the project (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
PART_MIB=${PART_MIB:-60}
CARRY=${GPU_CARRY:-.cache/gpu_carry}
CORPUS=${GPU_REPRO_CORPUS:-.cache/gpu_corpus}
WHEELS=${GPU_REPRO_WHEELS:-.whl}
SOURCE=${GPU_REPRO_SOURCE:-$("$PYTHON" -c "from llmshearing.assets import smollm2_gguf_path; print(smollm2_gguf_path())")}

[[ -f "$SOURCE" ]] || { echo "error: no model file at $SOURCE (GPU_REPRO_SOURCE: a .gguf file)" >&2; exit 2; }
if [[ ! -f "$CORPUS/manifest.json" ]]; then
    "$PYTHON" data_prep/build_sample_corpus.py --out "$CORPUS" --seq-len 512 \
        --max-train-tokens-per-domain 400000 --max-eval-tokens-per-domain 16384
fi
if [[ "$WHEELS" != none && ! -d "$WHEELS" ]]; then
    benchmarks/gpu/fetch_wheels.sh
fi

rm -rf "$CARRY"
staging="$CARRY/staging"
mkdir -p "$staging"
ln -s "$(realpath "$SOURCE")" "$staging/source.gguf"
ln -s "$(realpath "$CORPUS")" "$staging/corpus"
[[ "$WHEELS" == none ]] || ln -s "$(realpath "$WHEELS")" "$staging/whl"
tar -chf "$CARRY/payload.tar" -C "$staging" .  # -h: the files the links point at
rm -rf "$staging"
sha=$(sha256sum "$CARRY/payload.tar" | cut -d' ' -f1)
split -b "${PART_MIB}M" -d -a 2 "$CARRY/payload.tar" "$CARRY/payload.tar."
rm "$CARRY/payload.tar"
pieces=("$CARRY"/payload.tar.*)
for i in "${!pieces[@]}"; do
    part="$CARRY/part$((i + 1))"
    mkdir -p "$part"
    mv "${pieces[$i]}" "$part/"
    printf 'parts=%d\nsha256=%s\n' "${#pieces[@]}" "$sha" > "$part/payload.manifest"
done
echo "packed $(du -shL "$SOURCE" | cut -f1) model + corpus $(du -sh "$CORPUS" | cut -f1) + wheels into ${#pieces[@]} parts of at most $PART_MIB MiB:"
last=${#pieces[@]}
for ((i = 1; i < last; i++)); do
    echo "  device call $i: carry [\"$CARRY/part$i\"], command: true   (on a warm machine: make the next call at once)"
done
echo "  device call $last: carry [\"$CARRY/part$last\"], command: bash benchmarks/gpu/reproduce.sh, timeout_s 600"
