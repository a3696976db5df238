# Quick start on a fresh machine: `make demo` then `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= runs/demo

.PHONY: demo test test-all setup clean lint

$(STAMP): pyproject.toml setup.py eval/_rle.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/rmbench demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The house as the README draws it: ruff (pyflakes, pycodestyle errors, bugbear, pyupgrade, import order; 120 columns)
# and the import-linter layer contracts of pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check eval reports refinemask baselines tests tools
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache

# Optional mmdetection 3.3.0 reference (parity tests, `rmbench bench --compare mmdet`). mmcv 2.1.0 is built once
# from its PyPI sdist (its -std=c++17 flag patched to c++20 for torch 2.14) and cached outside the repo by
# tools/build_mmcv.sh, keyed by mmcv/torch/python versions (10-25 min on 2 cores the first time, seconds after).
MMDET_STAMP := $(VENV)/.mmdet-installed
.PHONY: mmdet test-ci

mmdet: $(MMDET_STAMP)

$(MMDET_STAMP): $(STAMP) tools/build_mmcv.sh
	$(BIN)/python -m pip install --quiet --disable-pip-version-check mmengine==0.10.7
	bash tools/build_mmcv.sh $(BIN)/python > $(VENV)/.mmcv-wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps "$$(tail -n1 $(VENV)/.mmcv-wheel)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps mmdet==3.3.0 shapely==2.2.0 terminaltables==3.1.10
	$(BIN)/python -c "import mmdet, mmcv; from mmcv.ops import RoIAlign, nms; print('mmdet', mmdet.__version__, 'mmcv', mmcv.__version__, 'with compiled ops')"
	@touch $@

# What CI runs after `make test`: the mmdet parity tests and the slow overfit runs of the other models.
test-ci: mmdet
	$(BIN)/python -m pytest -q -m "mmdet or slow"
