# make demo: a virtual environment, the package, torch, and a demo project trained once.
# make test: the suite (lint, goldens, a covering array of every three tricks, rendered scripts run).
# make test-all: what make test leaves out: every combination of tricks rendered and checked (CI runs both).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_TRICKS := --seed --amp --clip --accumulate --lr-plot --early-stop

.PHONY: demo test test-all lint golden bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	rm -rf demo
	$(BIN)/tricks new demo $(DEMO_TRICKS)
	cd demo && ../$(BIN)/python train.py --out-dir runs/demo --threads 1
	@echo
	@echo "demo/ is a project rendered with: tricks new demo $(DEMO_TRICKS)"
	@echo "its run wrote demo/runs/demo/: metrics.csv, last.pt (and last.pt.prev), best.pt, lr_schedule.png"
	@echo "next, in this shell (tricks and torch are in .venv):"
	@echo "    . $(VENV)/bin/activate"
	@echo "    cd demo && python train.py --threads 1   # one thread is fastest for these tiny models"
	@echo "    tricks new my-exp --seed --amp           # a project of your own"

lint: $(STAMP)
	$(BIN)/ruff check generator tests benchmarks
	$(BIN)/ruff format --check generator tests benchmarks

# two workers: the scripts run on one thread each (tests/conftest.py), so two cores run two tests at once
test: lint
	$(BIN)/python -m pytest -n 2 -m "not exhaustive"

test-all: $(STAMP)
	$(BIN)/python -m pytest -m exhaustive

golden: $(STAMP)
	$(BIN)/python -m tests.goldens --write
	git status --short golden

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/loop_speed.py
	$(BIN)/python benchmarks/loop_speed.py --tricks
	$(BIN)/python benchmarks/gan_ring.py
	$(BIN)/python benchmarks/lm_speed.py
	$(BIN)/python benchmarks/lm_speed.py --compile --repeats 3
	$(BIN)/python benchmarks/resume_skip.py > benchmarks/results/resume_skip.txt
	$(BIN)/python benchmarks/image_speed.py
	$(BIN)/python benchmarks/image_default.py > benchmarks/results/image_default.txt

clean:
	rm -rf demo .pytest_cache .ruff_cache
