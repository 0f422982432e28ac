# Sourced by the lent-GPU scripts (check.sh, reproduce.sh): put the carried wheels ahead of the
# image's own packages. GPU_CHECK_WHEELS: the wheel folder (default .whl), or "none" to use the
# Python environment as it is; GPU_CHECK_SITE: where they are installed (default /tmp/site).
install_carried_wheels() {  # install_carried_wheels [FOLDER]
    local wheels=${1:-${GPU_CHECK_WHEELS:-.whl}} site=${GPU_CHECK_SITE:-/tmp/site}
    if [[ "$wheels" != none ]]; then
        [[ -d "$wheels" ]] || { say "no wheels at $wheels: run benchmarks/gpu/fetch_wheels.sh and carry .whl"; return 1; }
        say "installing the carried wheels into $site"
        rm -rf "$site"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl \
            || { say "wheel install failed"; return 1; }
        export PYTHONPATH=$site:${PYTHONPATH:-}
    fi
    export PYTHONPATH=$PWD:${PYTHONPATH:-}
}

say() { echo "[$(date -u +%H:%M:%S)] $*"; }
