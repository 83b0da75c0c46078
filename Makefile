# Everyday commands. `make lint` is what .ci/run checks first; `make test` is its test run.
PYTHON ?= python

# bench/ scripts that run with no arguments and no pipeline outputs (they make their own inputs; data_feed needs
# ffmpeg: on PATH, or `pip install -e '.[bench]'`), and those that read outputs/ (after `make repro`).
BENCH_SELF_CONTAINED := bench/data_feed.py bench/localization.py bench/model_forward.py bench/train_step.py
BENCH_ON_OUTPUTS := bench/step_profile.py bench/checkpoint_curve.py

.PHONY: lint format test test-fast repro scores exp-show bench bench-outputs bench-list figures

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

# The headline scores (outputs/evaluate/metrics.json), then every score (metrics_detail.json), one per row.
scores:
	dvc metrics show
	dvc metrics diff --all --targets outputs/evaluate/metrics_detail.json

# The experiments of HEAD with their headline scores and train's held-out validation, in 120 columns (`dvc exp show` alone prints every param and
# dep); `make exp-show EXP_ARGS=-A` for the experiments of every commit. tests/test_metrics_files.py runs this line.
exp-show:
	dvc exp show --no-pager --drop '.*' --keep 'Experiment|Created|model\.(m_|vIoU)|val\.m_' $(EXP_ARGS)

# The README figures made from files in docs/ (matplotlib, headless).
figures:
	$(PYTHON) docs/plot_learning_curves.py

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
