# Two commands for a fresh machine: `make demo` and `make test` (each creates .venv if missing).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

D2_STAMP := $(VENV)/.detectron2

.PHONY: demo test lint bench clean-venv

$(STAMP): requirements.lock pyproject.toml tools/repair_torchvision.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and pinned to the local CPU wheel, so nothing later can pull a CUDA build
	$(BIN)/pip install -q torch==2.13.0+cpu
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python tools/repair_torchvision.py
	touch $(STAMP)

# detectron2 from ../shared/vendor (not on any registry here): the wheel is built once per machine and cached
# under ~/.cache/liid/wheels (tools/build_detectron2.py); without the tarball this says why and does nothing
$(D2_STAMP): $(STAMP) requirements-detectron2.lock tools/build_detectron2.py
	$(BIN)/python tools/build_detectron2.py
	touch $(D2_STAMP)

# the whole pipeline on the synthetic set from liid/configs/synthetic_demo.yaml, with demo_out/report.html; reruns skip done stages
demo: $(STAMP)
	$(BIN)/liid run --config-file configs/synthetic_demo.yaml --out demo_out

test: $(STAMP) $(D2_STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python tools/bench_graph.py

clean-venv:
	rm -rf $(VENV)
