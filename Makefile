# The two commands of the README, plus the usual helpers. Everything runs in .venv.
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install demo test lint bench

install:
	bash scripts/install.sh

demo: install ## index the sample documents and serve the chat API on $(HOST):$(PORT) (make demo PORT=8001)
	$(BIN)/llmfti serve --dev --host $(HOST) --port $(PORT)

test: install ## the fast, offline test suite
	$(BIN)/pytest

lint:
	$(BIN)/ruff check llmfti pipelines agents evals tests benchmarks

bench: ## every CPU benchmark (tens of minutes on 2 cores); each prints a table and writes benchmarks/results/*.json
	for b in index_throughput retrieval_quality search_latency query_encoder online_store serve; do $(BIN)/python -m benchmarks.$$b || exit 1; done
