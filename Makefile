# One entry point for set-up, tests and the demo. Every target sets up .venv/ first (idempotent).
# GPU machines: make MXNET=mxnet-cu112==1.9.1 <target>
PYTHON ?= python3
MXNET ?= mxnet==1.9.1
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(subst =,_,$(MXNET))
DEMO_DIR ?= demo_output

.PHONY: setup test demo bench clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
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
