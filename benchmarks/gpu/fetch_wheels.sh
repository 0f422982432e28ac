#!/usr/bin/env bash
# Fetch the wheels the lent GPU machine needs (benchmarks/gpu/wheels.txt) into .whl/ at the repo root,
# for CPython 3.12 on manylinux x86_64 (that machine's Python), without their dependencies (each one
# needed is listed). antlr4-python3-runtime (omegaconf's parser) is published as an sdist only: it is
# built here into a pure-Python wheel. Run it on the CPU machine, then carry .whl (see README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=.whl
PIP=(python3 -m pip)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64 --platform any)
grep -qxF "/$WHEELS/" .git/info/exclude 2>/dev/null || grep -qxF "/$WHEELS/" .gitignore || echo "/$WHEELS/" >> .git/info/exclude
mkdir -p "$WHEELS"
requirements=$(grep -v '^\s*#' benchmarks/gpu/wheels.txt | grep -v '^\s*$')
# shellcheck disable=SC2086
"${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    -d "$WHEELS" $requirements
"${PIP[@]}" wheel -q --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3
du -sh "$WHEELS"
