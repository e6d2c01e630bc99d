#!/usr/bin/env bash
# The wheel works outside the checkout. Builds the wheel, installs it (not editable, no extras: the core
# install) into a fresh venv, and from a temporary folder runs presets, train, quantize, evaluate and report; checks
# that `report` without jinja2 fails naming the 'report' extra; installs [report] and writes the report again; installs
# [export], compresses the test split and exports the codec (posthoc_vq.export.codec), then decodes those files with the
# torch-free runtime (posthoc_vq.codec.runtime) in a second venv holding only numpy, onnxruntime, constriction and the wheel.
# Called by `make wheel-check`, which `make test` runs before the test suite. Any failure stops it (non-zero exit).
#
#   BUILD_PYTHON  builds the wheel with its own setuptools, no build isolation: nothing is fetched, torch is never
#                 pulled (default: the repository's .venv, which `make install` gives setuptools through [test])
#   VENV_PYTHON   creates the fresh venv (default: python3)
#   WHEEL_CHECK_TMP  holds the temporary folders (default: /dev/shm when it has 4 GB free and allows executables,
#                 since writing and removing a torch venv there takes seconds, not minutes; else $TMPDIR or /tmp)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_PYTHON="${BUILD_PYTHON:-$repo/.venv/bin/python}"
VENV_PYTHON="${VENV_PYTHON:-python3}"
if [ -z "${WHEEL_CHECK_TMP:-}" ]; then
    WHEEL_CHECK_TMP="${TMPDIR:-/tmp}"
    if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(df --output=avail -k /dev/shm 2>/dev/null | tail -1)" -gt 4000000 ] 2>/dev/null \
        && ! findmnt -no OPTIONS /dev/shm 2>/dev/null | grep -qw noexec; then
        WHEEL_CHECK_TMP=/dev/shm
    fi
fi
tmp="$(mktemp -d "$WHEEL_CHECK_TMP/posthoc-vq-wheel-check.XXXXXX")"
cleanup() { local t=$SECONDS; rm -rf "$tmp"; echo "[wheel-check] removed the temporary folder in $((SECONDS - t)) s"; }
trap cleanup EXIT
trap 'echo "wheel-check FAILED (line $LINENO: $BASH_COMMAND)" >&2' ERR
start=$SECONDS
step() { printf '[wheel-check %3ds] %s\n' "$((SECONDS - start))" "$*"; }

step "build the wheel from the checkout's files (tracked, or new and not ignored)"
mkdir -p "$tmp/src" "$tmp/dist" "$tmp/work"
cd "$repo"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -f "$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
"$BUILD_PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w "$tmp/dist" "$tmp/src"
wheel="$(ls "$tmp"/dist/posthoc_vq-*.whl)"
"$BUILD_PYTHON" - "$wheel" "$repo/src/posthoc_vq" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, package = sys.argv[1], Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
want = {p.relative_to(package.parent).as_posix() for p in (package / "configs").rglob("*.yaml")}
missing = sorted(want - names)
assert want and not missing, f"the wheel lacks {missing}"
print(f"{Path(wheel).name}: {len(want)} preset and ablation YAML files inside")
PY

step "fresh venv: torch (constraints.txt) first, then the wheel without extras"
"$VENV_PYTHON" -m venv "$tmp/venv"
pip_install() {  # quiet; drops pip's notes on a configured local index folder that lacks a project
    "$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$repo/constraints.txt" "$@" \
        2> >(grep -v "^WARNING: Location 'file://.*' is ignored: it is neither a file nor a directory" >&2)
}
pip_install torch
pip_install "$wheel"
py="$tmp/venv/bin/python"
cli="$tmp/venv/bin/posthoc-vq"
# the installed package, not the checkout, and none of the extras' packages (jinja2 excepted: torch itself requires it)
env -u PYTHONPATH "$py" - "$tmp/venv" <<'PY'
import importlib.util, sys
import posthoc_vq
assert posthoc_vq.__file__.startswith(sys.argv[1]), posthoc_vq.__file__
present = [m for m in ("ray", "onnx", "onnxruntime", "onnxscript", "torchmetrics", "statsmodels", "mlflow") if importlib.util.find_spec(m)]
assert not present, f"the core install pulled extras' packages: {present}"
PY

cd "$tmp/work"  # outside the checkout
export POSTHOC_VQ_DATA="$tmp/data" MPLCONFIGDIR="$tmp/mpl"
run() { step "posthoc-vq $*"; env -u PYTHONPATH -u POSTHOC_VQ_CONFIGS "$cli" "$@"; }
run --version
run presets | tee presets.txt
grep -q '^preset   digits ' presets.txt
grep -q '^ablation smoke ' presets.txt
run train --preset digits --out r --set train.epochs=2 --no-progress
run quantize r --preset digits/quantize-euclidean
run evaluate r
run evaluate r --codebook kmeans-K64-mu-train

# torch requires jinja2, so a core install has it and `report` works; where jinja2 is absent, `report` must fail in
# one line naming the 'report' extra and write nothing (simulated here by hiding jinja2 from the installed package)
step "posthoc-vq report with jinja2 hidden: must fail naming the 'report' extra, and write nothing"
if out="$(env -u PYTHONPATH "$py" -c 'import sys; sys.modules["jinja2"] = None; from posthoc_vq.cli import main; sys.exit(main(sys.argv[1:]))' \
          report r --out rep --no-progress 2>&1)"; then
    echo "report ran without jinja2; expected an error naming the 'report' extra" >&2
    exit 1
fi
echo "$out"
grep -qF "needs the 'report' extra: pip install 'posthoc-vq[report]'" <<<"$out"
test ! -e rep
run report r --out rep-core --no-progress
test -s rep-core/report.md
test -s rep-core/report.html

step "install the 'report' extra"
pip_install "$wheel[report]"
run report r --out rep --no-progress
test -s rep/report.md
test -s rep/report.html

# The torch-free decoder runtime: files compressed and a codec exported by the torch venv decode, in a second venv
# holding only numpy, onnxruntime, constriction and the wheel (--no-deps), to the images RunCodec gives (within 1e-4).
step "install the 'export' extra; compress the test split (two priors) and export the codec of kmeans-K64-mu-train"
pip_install "$wheel[export]"
run compress r --codebook kmeans-K64-mu-train --split test --out phvq
run compress r --codebook kmeans-K64-mu-train --split test --prior uniform --out phvq-uniform
env -u PYTHONPATH "$py" - <<'PY'
from pathlib import Path
import numpy as np
from posthoc_vq.evaluation.bitstreams import open_codec
from posthoc_vq.export.codec import export_codec
manifest = export_codec("r", "kmeans-K64-mu-train", "codec", calibration_size=128)
codec = open_codec("r", "kmeans-K64-mu-train")
for f in [Path("phvq/test.phvq"), Path("phvq-uniform/test.phvq")]:
    _, codes, images = codec.decompress(f.read_bytes(), str(f))  # the reference: RunCodec's torch decode
    np.save(f.with_suffix(".images.npy"), images.numpy())
    np.save(f.with_suffix(".codes.npy"), codes)
print("exported codec/:", ", ".join(sorted(p.name for p in Path("codec").iterdir())),
      "| fp32 max |ORT - torch|", f"{manifest['decoders']['fp32']['max_abs_diff_vs_torch']:.2e}", "| int8:", manifest["int8"]["chosen"])
PY

step "torch-free venv: numpy, onnxruntime, constriction, the wheel --no-deps; decode the files with posthoc_vq.codec.runtime"
"$VENV_PYTHON" -m venv "$tmp/venv-rt"
pip_rt() {
    "$tmp/venv-rt/bin/python" -m pip install --quiet --disable-pip-version-check -c "$repo/constraints.txt" "$@" \
        2> >(grep -v "^WARNING: Location 'file://.*' is ignored: it is neither a file nor a directory" >&2)
}
pip_rt numpy onnxruntime constriction
pip_rt --no-deps "$wheel"
env -u PYTHONPATH "$tmp/venv-rt/bin/python" - "$tmp/venv-rt" <<'PY'
import importlib.util, sys
from pathlib import Path
assert importlib.util.find_spec("torch") is None, "torch is importable in the torch-free venv"
import numpy as np
import posthoc_vq
assert posthoc_vq.__file__.startswith(sys.argv[1]), posthoc_vq.__file__
from posthoc_vq.codec.runtime import CodecRuntime
for int8 in (False, True):
    rt = CodecRuntime("codec", int8=int8)
    for f in [Path("phvq/test.phvq"), Path("phvq-uniform/test.phvq")]:
        header, codes, images = rt.decompress(f.read_bytes(), str(f))
        ref = np.load(f.with_suffix(".images.npy"))
        assert np.array_equal(codes, np.load(f.with_suffix(".codes.npy"))), f
        diff = float(np.abs(images - ref).max())
        if int8:
            psnr = 10 * np.log10(1 / ((images.astype(np.float64) - ref) ** 2).mean())
            assert psnr > 30, (f, psnr)
            print(f"{f}: {header.n_images} images, {header.prior_kind} prior; int8 ({rt.decoder['format']}) max diff {diff:.2e}, PSNR vs torch {psnr:.1f} dB")
        else:
            assert diff < 1e-4, (f, diff)
            print(f"{f}: {header.n_images} images, {header.prior_kind} prior; fp32 max |runtime - RunCodec| {diff:.2e}")
record = CodecRuntime("codec").decompress_to_png(["phvq/test.phvq"], "decoded")
assert record["n_images"] == len(ref), record
assert "torch" not in sys.modules
print(f"decompress_to_png: {record['n_images']} .{record['format']} files; torch never imported")
PY
step "passed in $((SECONDS - start)) s"
