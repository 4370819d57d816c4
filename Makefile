# One-command entry points. `make demo` and `make test` create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.scribmed-installed

.PHONY: install demo test bench clean

# sam2 ships as an sdist that builds against torch: it is built without build isolation, against the
# torch and setuptools installed first (an isolated build would install torch a second time, about
# 2 minutes without a wheel cache); SAM2_BUILD_CUDA=0 skips its optional CUDA extension (video
# post-processing only).
#
# pip compiles every installed module to bytecode, one file at a time (for this venv about 90 s on
# the 2-core machine with `compileall -f -j 1`); the installs skip that, and compileall then
# compiles the venv and scribmed's own package once, on every core, leaving out the packages' own
# test suites (tests/ folders, a quarter of the files, never imported): about 40 s. Bytecode is
# written here, not at first import, because with PYTHONDONTWRITEBYTECODE set every process would
# compile what it imports again. Like pip, it skips files this Python cannot compile (torch ships
# helpers in Python 3.12 syntax).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -c constraints.txt torch==2.14.1 torchvision==0.29.1 'setuptools>=70.1'
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-compile --no-build-isolation -c constraints.txt -e '.[test]'
	$(PY) -m compileall -qq -j 0 -x 'site-packages/(.*/)?tests?/' $(VENV)/lib scribmed || true
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m scribmed demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

bench: $(STAMP)
	$(PY) benchmarks/metrics_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
