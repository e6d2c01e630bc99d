# Set-up and the two entry points a newcomer needs: `make demo` and `make test`.
# Everything installs from this repo's own files into .venv, with every extra ([all]) and the test tools;
# constraints.txt pins torch to the CPU wheel (2.13.0), installed first so that no other package pulls a CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
DEMO ?= runs/demo
SHARED_DATA ?= $(abspath ../shared/datasets)

.PHONY: install browser demo test test-gpu wheel-check docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -c constraints.txt torch
	$(PIP) -c constraints.txt -e '.[all,test]'
	touch $@

CLI := $(VENV)/bin/posthoc-vq

# The main job on the embedded default (scikit-learn's digits), offline, a minute or two on 2 cores:
# train a VAE, build Euclidean and geodesic codebooks post hoc, evaluate each, write the table and figure.
demo: install
	rm -rf $(DEMO)
	$(CLI) train --preset digits --out $(DEMO)
	$(CLI) quantize $(DEMO) --preset digits/quantize-euclidean
	$(CLI) quantize $(DEMO) --preset digits/quantize-geodesic
	$(CLI) evaluate $(DEMO)
	$(CLI) evaluate $(DEMO) --codebook kmeans-K64-mu-train
	$(CLI) evaluate $(DEMO) --codebook geodesic-K64-mu-train-k15
	$(CLI) table $(DEMO)
	$(CLI) compress-weights $(DEMO) --bits 8
	$(CLI) compress-weights $(DEMO) --bits 4
	$(CLI) report $(DEMO) --out $(DEMO)/report

# Headless Chromium for the report's browser test (tests/integration/test_report_browser.py), from Debian's package.
browser:
	@command -v chromium >/dev/null 2>&1 || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

test: install browser wheel-check docs
	$(VENV)/bin/lint-imports
	POSTHOC_VQ_SHARED_DATA=$(SHARED_DATA) $(PY) -m pytest

# The docs site (mkdocs.yml, docs/): --strict, so a broken link or anchor, or an unreadable docstring, fails the build.
# Offline (no web fonts, no plugin that downloads); the site goes to site/, which git ignores.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# CUDA checks, where a GPU is lent (outside the default test paths; they fail, never skip, without CUDA).
test-gpu: install
	$(PY) -m pytest gpu_tests

# The wheel works outside the checkout: built, installed without extras into a fresh venv in a temp folder,
# then presets/train/quantize/evaluate/report run from a temp folder (.ci/wheel_check.sh; about 100 s here).
wheel-check: install
	BUILD_PYTHON=$(abspath $(PY)) VENV_PYTHON=$(PYTHON) bash .ci/wheel_check.sh

bench: install
	POSTHOC_VQ_SHARED_DATA=$(SHARED_DATA) $(PY) bench/train_throughput.py
	$(PY) bench/export_latency.py --data-dir $(SHARED_DATA)

clean:
	rm -rf $(VENV) runs/demo .pytest_cache
