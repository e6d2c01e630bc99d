#!/usr/bin/env bash
# The torch window: the core tests on the OLDEST and the NEWEST torch the package supports (pyproject.toml's
# torch>=2.6,<2.16), each in a fresh venv in a temporary folder outside the checkout, removed at the end.
#
#   leg     torch    numpy      what runs
#   oldest  2.6.0    1.26.x     CORE_TESTS below
#   newest  2.15.0   2.x        CORE_TESTS below
#
# torch from PyPI is a CUDA build for Linux x86_64: its libtorch_cuda.so links libcudart, cuBLAS, cuDNN, NCCL and
# the rest, so `import torch` fails without the nvidia-* wheels, even on a CPU-only machine (checked: a --no-deps
# torch 2.4.1 stops in torch/__init__.py: "libcublas.so.*[0-9] not found in the system path"). The legs install torch
# with its dependencies (about 2.5 GB of downloads each) and run on the CPU.
# A constraints file pins torch (and numpy) for the whole leg, so that installing the project never replaces it; given as
# PIP_CONSTRAINT, it also takes the place of a machine-wide pip constraint (a cap on torch) for these venvs only.
# The repository's own .venv (constraints.txt: torch==2.13.0, CPU) is never touched.
#
#   TORCH_WINDOW_PYTHON  the Python that creates the venvs (default python3; 3.11 or newer)
#   TORCH_WINDOW_LEGS    the legs to run (default "oldest newest")
#   TORCH_WINDOW_TMP     holds the temporary folder (default $TMPDIR or /tmp)
# Any failure stops it (non-zero exit); each leg prints its timings and pytest's summary line.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${TORCH_WINDOW_PYTHON:-python3}"
LEGS="${TORCH_WINDOW_LEGS:-oldest newest}"
EXTRAS="export,metrics,adapters,codecs,report,sweeps,test"  # what CORE_TESTS import (a skip fails in CI: tests/conftest.py)
# tests/unit and tests/contract whole, and the integration tests that train, quantize, evaluate, compress weights and
# export (ONNX + the torch-free codec runtime) on the embedded digits data
CORE_TESTS=(
    tests/unit tests/contract
    tests/integration/test_train.py tests/integration/test_quantize_pipeline.py tests/integration/test_api.py
    tests/integration/test_weights_pipeline.py tests/integration/test_codec_runtime.py
)

pip_quiet() {  # a command, its stderr without pip's notes about a machine's unreachable local index folders
    "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

leg_spec() {  # leg -> "torch numpy-specifier"
    case "$1" in
        oldest) echo "${TORCH_WINDOW_OLDEST:-2.6.0} >=1.26,<2" ;;
        newest) echo "${TORCH_WINDOW_NEWEST:-2.15.0} >=2,<3" ;;
        *) echo "unknown leg '$1' (oldest, newest)" >&2; return 1 ;;
    esac
}

tmp="$(mktemp -d "${TORCH_WINDOW_TMP:-${TMPDIR:-/tmp}}/posthoc-vq-torch-window.XXXXXX")"
cleanup() {
    if [ -n "${TORCH_WINDOW_KEEP:-}" ]; then echo "[torch-window] kept $tmp (TORCH_WINDOW_KEEP)"; return; fi
    local t=$SECONDS; rm -rf "$tmp"; echo "[torch-window] removed $tmp in $((SECONDS - t)) s"
}
trap cleanup EXIT
trap 'echo "torch-window FAILED (line $LINENO: $BASH_COMMAND)" >&2' ERR
start=$SECONDS

for leg in $LEGS; do
    read -r torch_version numpy_spec <<<"$(leg_spec "$leg")"
    t0=$SECONDS
    say() { printf '[torch-window %s %4ds] %s\n' "$leg" "$((SECONDS - t0))" "$*"; }
    venv="$tmp/$leg"
    printf 'torch==%s\nnumpy%s\n' "$torch_version" "$numpy_spec" >"$tmp/$leg-constraints.txt"
    export PIP_CONSTRAINT="$tmp/$leg-constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
    pip=(pip_quiet "$venv/bin/python" -m pip install --quiet)

    say "venv ($("$PYTHON" --version)), torch==$torch_version with its dependencies"
    "$PYTHON" -m venv "$venv"
    "${pip[@]}" "torch==$torch_version"
    say "the project, editable, with [$EXTRAS] (numpy$numpy_spec)"
    "${pip[@]}" -e "$repo[$EXTRAS]"
    t_install=$((SECONDS - t0))
    "$venv/bin/python" - <<'EOF'
import sys, warnings

import posthoc_vq
import posthoc_vq.compat as c

assert "torch" not in sys.modules, "importing posthoc_vq imported torch"
for older in ("2.4.1", "1.13.1+cu117"):  # below the window: ImportError naming it
    try:
        c.check_torch(older)
        raise AssertionError(f"torch {older} passed the check")
    except ImportError as err:
        assert c.TESTED_WINDOW in str(err), err
with warnings.catch_warnings(record=True) as caught:  # above it: one warning line
    warnings.simplefilter("always")
    c.check_torch("2.16.0.dev20270101")
assert [w.category for w in caught] == [c.UntestedTorchWarning] and "\n" not in str(caught[0].message), caught
import numpy, torch

print(f"[torch-window] torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), numpy {numpy.__version__}, "
      f"tested window {c.TESTED_WINDOW}; the import-time check refuses an older torch and warns on a newer one")
EOF
    say "core tests: ${CORE_TESTS[*]}"
    (cd "$repo" && "$venv/bin/python" -m pytest -q -p no:cacheprovider "${CORE_TESTS[@]}")
    say "leg done: install ${t_install} s, tests $((SECONDS - t0 - t_install)) s"
    [ -n "${TORCH_WINDOW_KEEP:-}" ] || rm -rf "$venv"
    unset PIP_CONSTRAINT
done
echo "[torch-window] all legs ($LEGS) passed in $((SECONDS - start)) s"
