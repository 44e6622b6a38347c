# `make demo` and `make test` work on a fresh machine: each creates or refreshes .venv first, with exactly
# the versions the project was tested with (constraints.txt). `make lock` moves them to the newest releases.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LOCK := constraints.txt
LOCK_VENV := build/lock-venv

.PHONY: install lock demo test unit typecheck clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade -c $(LOCK) pip setuptools wheel
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The newest releases pyproject.toml's ranges allow, installed into a new environment and frozen into
# constraints.txt. Run it to move to newer libraries (then `make test`, and commit constraints.txt with the
# fixes it needed); `make demo` and `make test` then install exactly those.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Exactly what 'make demo' and 'make test' install: made by 'make lock' (Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())'), $$(uname -sm)) on $$(date -u +%Y-%m-%d)."; \
	  echo "# pyproject.toml keeps ranges, for installing the package into environments of your own."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

# Writes sample photos (real pictures from scikit-image/scikit-learn, one of them a DNG), ingests them
# with ViT-B-32 (random weights where the pretrained ones cannot be downloaded), then searches.
demo: $(STAMP)
	$(PY) -m samples.sample_photos demo_photos
	$(PY) -m ray_pipeline ingest demo_photos --collection demo --chroma-path demo_chroma \
		--allow-random-weights --errors demo_errors.jsonl
	$(PY) -m ray_pipeline search "a cat" --collection demo --chroma-path demo_chroma -k 3

test: $(STAMP)
	$(PY) -m pytest

# The tests that need no Ray, no server and no CLI subprocess: under a minute.
unit: $(STAMP)
	$(PY) -m pytest -m unit

# mypy on ray_pipeline/ and serve_deployments/ (settings in pyproject.toml); CI runs it before the tests.
typecheck: $(STAMP)
	$(PY) -m mypy

clean:
	rm -rf demo_photos demo_chroma demo_errors.jsonl .pytest_cache
