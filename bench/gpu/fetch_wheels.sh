#!/usr/bin/env bash
# The packages posthoc-vq needs that the lent GPU machines' image lacks (its python3 is 3.12 with torch, numpy,
# scipy, scikit-learn, rich, pyyaml, safetensors, pillow, matplotlib), as cp312 manylinux wheels in .whl/
# (gitignored), for a device call to carry: see bench/gpu/posthoc_vs_joint_full.sh. Run here, where pip works.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP="${PYTHON:-python3} -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64"
mkdir -p .whl
# pure-Python or binary, pinned to what this repo's own environment has, so both run the same code
for pkg in pydantic pydantic-core annotated-types typing-inspection vector-quantize-pytorch einx einops faiss-cpu constriction argcomplete; do
  version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$pkg'))")
  $PIP $PLATFORMS "$pkg==$version"
done
ls -la .whl
