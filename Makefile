# Everyday commands. `make lint` is what .ci/run checks first; `make test` is its test run.
PYTHON ?= python

# bench/ scripts that run with no arguments and no pipeline outputs (they make their own inputs; data_feed needs
# ffmpeg: on PATH, or `pip install -e '.[bench]'`), and those that read outputs/ (after `make repro`).
BENCH_SELF_CONTAINED := bench/data_feed.py bench/localization.py bench/model_forward.py bench/train_step.py
BENCH_ON_OUTPUTS := bench/step_profile.py bench/checkpoint_curve.py

.PHONY: lint format test test-fast repro bench bench-outputs bench-list

lint:
	ruff check .
	ruff format --check .
	mypy cgstvg

# Import order (ruff's I rules) and the format; the other lint fixes are left to a person.
format:
	ruff check --select I --fix .
	ruff format .

test:
	$(PYTHON) -m pytest

test-fast:
	$(PYTHON) -m pytest -m "not slow"

repro:
	dvc repro

# Each script prints one JSON object as its last line (see CONTRIBUTING.md); they run one after the other.
bench:
	@for script in $(BENCH_SELF_CONTAINED); do echo "== $$script"; $(PYTHON) $$script || exit $$?; done

bench-outputs:
	@for script in $(BENCH_ON_OUTPUTS); do echo "== $$script"; $(PYTHON) $$script || exit $$?; done

# Every benchmark with the first line of its docstring (the _*.py files are their helpers).
bench-list:
	@for script in $(BENCH_SELF_CONTAINED) $(BENCH_ON_OUTPUTS); do \
	  printf "%-28s %s\n" "$$script" "$$(sed -n '1s/^"""//p' $$script)"; \
	done
