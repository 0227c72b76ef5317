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

.PHONY: setup test demo bench clean-venv check-python

setup: check-python $(STAMP)

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
	$(PY) -m pytest tests

demo: setup
	$(PY) tools/demo.py --output $(DEMO_DIR)

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
