# One entry point for set-up, tests and the demo. Every target sets up the virtual environment first (idempotent).
# GPU machines: make MXNET=mxnet-cu112==1.9.1 <target>; another Python: make PYTHON=python3.12 <target>
PYTHON ?= python3
MXNET ?= mxnet==1.9.1
VENV ?= .venv
PY := $(VENV)/bin/python
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
# MXNet 1.9.1 runs with numpy < 2 only, and numpy 1.x has no wheels for Python 3.13 and later.
SUPPORTED_PYTHONS := 3.9 3.10 3.11 3.12
STAMP := $(VENV)/.installed-$(subst =,_,$(MXNET))-py$(PYVER)
DEMO_DIR ?= demo_output

.PHONY: setup test demo demo-full bench clean-venv check-python browser

setup: check-python $(STAMP) browser

# The real-browser test (tests/test_browser.py) drives headless Chromium: Debian's chromium and chromium-driver,
# installed here when missing (as root, or through passwordless sudo). Quiet when both are there; an error when
# they cannot be installed, so CI never skips that test unnoticed. NO_BROWSER=1 opts out (the test is then skipped).
NO_BROWSER ?=
browser:
	@if [ -n "$(NO_BROWSER)" ]; then echo "NO_BROWSER=$(NO_BROWSER): not installing chromium (tests/test_browser.py will be skipped)"; \
	elif command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
		else echo "error: chromium and chromium-driver are missing and installing them needs root: run 'sudo apt-get install -y chromium chromium-driver', or pass NO_BROWSER=1 to skip the browser test"; exit 2; fi; \
		echo "installing chromium and chromium-driver (apt-get) for the browser test"; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; } \
		|| { echo "error: could not install chromium and chromium-driver with apt-get (Debian package names); install them, or pass NO_BROWSER=1 to skip the browser test"; exit 2; }; \
		command -v chromedriver >/dev/null 2>&1 || { echo "error: chromedriver still not on PATH after installing chromium-driver"; exit 2; }; \
	fi

check-python:
	@test -n "$(PYVER)" || { echo "error: cannot run PYTHON=$(PYTHON); pass an interpreter, e.g. make PYTHON=python3.12 setup"; exit 2; }
	@case " $(SUPPORTED_PYTHONS) " in *" $(PYVER) "*) ;; *) echo "error: $(PYTHON) is Python $(PYVER); gluon-fashion supports Python $(SUPPORTED_PYTHONS) (3.11 and 3.12 tested): MXNet 1.9.1 needs numpy < 2, which has no wheels for newer Pythons"; exit 2;; esac

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit("%d.%d" % sys.version_info[:2] != "$(PYVER)")'; then \
		echo "$(VENV) holds another Python version: rebuilding it with $(PYTHON) ($(PYVER))"; rm -rf $(VENV); fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(MXNET)" -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

test: setup
	GLUON_FASHION_NO_BROWSER=$(NO_BROWSER) $(PY) -m pytest tests

demo: setup
	$(PY) tools/demo.py --output $(DEMO_DIR)

# The Mask R-CNN convergence benchmark's CPU recipe (about 20 minutes on 2 cores): a model that learns (segm mAP
# about 0.3), its validation report, then its page served on http://127.0.0.1:$(DEMO_PORT)/ until Ctrl-C.
DEMO_FULL_DIR ?= $(DEMO_DIR)/full
DEMO_PORT ?= 8080
demo-full: setup
	$(PY) tools/demo.py --full --serve --port $(DEMO_PORT) --output $(DEMO_FULL_DIR)

bench: setup
	$(PY) benchmarks/bench_convert.py

clean-venv:
	rm -rf $(VENV)

# GPU check in one command (benchmarks/gpu/README.md): a CUDA build of MXNet, e.g.
# make MXNET=mxnet-cu112==1.9.1 gpu-check; make gpu-check GPU_CHECK_ARGS=--cpu is the dry run on CPU contexts.
GPU_CHECK_ARGS ?=
GPU_VARIANT ?= cu112
.PHONY: gpu-check gpu-transfer
gpu-check: setup
	$(PY) benchmarks/gpu/gpu_check.py $(GPU_CHECK_ARGS)

# Wheels for a Python 3.12 GPU machine without a package index, in <= 60 MiB bundles, and the device commands.
gpu-transfer: setup
	$(PY) benchmarks/gpu/fetch_wheels.py --variant $(GPU_VARIANT)
	$(PY) benchmarks/gpu/plan.py --variant $(GPU_VARIANT)
