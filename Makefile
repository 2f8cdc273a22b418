# Two commands do everything on a fresh machine:
#   make run    install, start embedded services if none are configured, materialize the last 7 days, print a summary
#   make test   install, run the test suite (against real PostgreSQL)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install run test up dev worker reliability round-trips bench bench-peers bench-ledger clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/idem run --days 7

up: install
	$(BIN)/idem up

dev: install
	$(BIN)/idem dev

worker: install
	deploy/celery/worker.sh

# The full reliability matrix (>= 150 scenarios, >= 60 of them with a fault, over the three stores) and its
# scorecard; `make test` runs the quick one.
reliability: install
	IDEM_RELIABILITY_FULL=1 $(BIN)/pytest idem_platform_tests/reliability -q
	$(BIN)/python -m idem_platform_tests.reliability.scorecard --min-fault-scenarios 60 --min-scenarios 150

test: install
	$(BIN)/pytest

# The property-based round trips of every sink with 500 generated frames each (`make test` runs 25).
round-trips: install
	IDEM_HYPOTHESIS_EXAMPLES=500 $(BIN)/pytest idem_platform_tests/storage/test_round_trips.py -q

# Side-by-side benchmarks: each prints baseline, platform, medians and the ratio with its target (docs/benchmarks.md).
bench: install
	$(BIN)/python -m benchmarks.run_all

# The platform beside dlt, dbt-core (microbatch) and SQLMesh on the same public data, scenario by scenario
# (docs/benchmarks.md, "Peers side by side"): each peer is pip-installed into its own venv under the state dir.
bench-peers: install
	$(BIN)/python -m benchmarks.peers.run

# The ledger's reads and a one-day write on a generated ledger of 10k vs 10M rows (about 7 minutes, 3.7 GB of
# disk while it runs; not in `make bench`'s 10-minute budget). `--rows 10000 1000000` scales it down.
bench-ledger: install
	$(BIN)/python benchmarks/bench_ledger_scale.py

clean:
	rm -rf .idem
