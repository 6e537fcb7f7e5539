# Tasks of the pix2video repository. Run inside the virtualenv that .ci/run
# (or the README) sets up; PYTHONPATH lets a plain checkout run too.
PYTHON ?= python
export PYTHONPATH := $(CURDIR)/services:$(CURDIR)/clients$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: test lint format typecheck protos bench-smoke check

check: lint test  ## what .ci/run runs

test:  ## the whole test suite
	$(PYTHON) -m pytest -q

lint:  ## ruff, ruff format (check only) and mypy: fails on any finding
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

format:  ## apply ruff's fixes and formatting
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

typecheck:  ## mypy only (engine, store, models; see [tool.mypy] in pyproject.toml)
	$(PYTHON) -m mypy

protos:  ## regenerate clients/pix2video_api from protos/ (grpcio-tools as pinned in the test extra)
	protos/generate.sh

bench-smoke:  ## every benchmark row end to end on the CPU, tiny models
	$(PYTHON) bench/bench_pix2video.py --smoke --out /tmp/pix2video-bench-smoke.md
	@tail -n +1 /tmp/pix2video-bench-smoke.md
