# `make demo` and `make test` work on a fresh machine: each creates or refreshes .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test unit typecheck clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

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
