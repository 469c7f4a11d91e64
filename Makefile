# streetwatch — the two set-up commands are `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SW := $(VENV)/bin/streetwatch
# Offline-safe Ultralytics (no font or weight downloads at run time); see detect/runtime_env.py.
export YOLO_OFFLINE ?= 1
export YOLO_AUTOINSTALL ?= false
export YOLO_CONFIG_DIR ?= $(CURDIR)/.cache/ultralytics
export RAY_USAGE_STATS_ENABLED ?= 0
PYTEST_ARGS ?=

.PHONY: install system-deps weights demo test test-slow bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel setuptools
	$(PY) -m pip install --quiet -e '.[all]'
	touch $@

# Debian packages some tests and the demo use (ffmpeg, GStreamer RTSP server, Chromium, PostgreSQL).
system-deps:
	bash scripts/install-system-deps.sh

# Link the offline COCO weights from ../shared/models when this checkout sits beside them.
weights:
	bash scripts/link-shared-weights.sh

# The whole system on embedded defaults (docs/demo.md); DEMO_ARGS e.g. `--no-serve` or `--port 8080`.
DEMO_ARGS ?=
demo: install weights
	$(SW) demo --out demo-out $(DEMO_ARGS)

test: install system-deps weights
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install system-deps weights
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# Benchmark this machine (docs/benchmarks.md); BENCH_ARGS picks the variants, results land in out/.
BENCH_ARGS ?= --backend onnx,torch --precision fp32,int8 --batch 1,4 --imgsz 320,640 --duration 5
bench: install weights
	mkdir -p out
	$(SW) bench $(BENCH_ARGS) --overwrite --out out/bench-$$(date +%F).json --markdown out/bench-$$(date +%F).md

clean:
	rm -rf .pytest_cache demo-out .cache
