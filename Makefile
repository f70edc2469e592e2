# The two commands of the README. Both install from this repo's own files first.
PYTHON ?= python
EXPERIMENT ?= experiments/paper/m2_mlp_mlm_caption.yaml

.PHONY: run test test-fast install install-dev lint typecheck pytest notebook

install:
	$(PYTHON) -m pip install -e .

install-dev:
	$(PYTHON) -m pip install -e ".[dev]"

# install, then train the default experiment on the bundled collection (validation
# retrieval metrics every epoch, then test of the best checkpoint and a TREC run file)
run: install
	$(PYTHON) -m lightning_mlsr fit --config $(EXPERIMENT)

# install with test extras, then lint, format check, type check and the whole test suite
test: install-dev lint typecheck pytest

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

typecheck:
	$(PYTHON) -m mypy

pytest:
	$(PYTHON) -m pytest

# the suite without the cases marked slow (2-process DDP, full training, notebook
# execution); CI runs everything (`make test`)
test-fast: install-dev lint typecheck
	$(PYTHON) -m pytest -m "not slow"

# Jupyter with the notebook extra, opened on the co-activation analysis
notebook:
	$(PYTHON) -m pip install -e ".[notebook]"
	jupyter lab notebooks/coactivation.ipynb
