"""The layer contracts of the README's Architecture are enforced, not hoped for (``make lint`` runs import-linter).

Each test copies the four packages and ``pyproject.toml`` into a temporary folder, optionally adds one forbidden
import, and runs ``lint-imports`` there: the house as it is must pass, and every arrow that runs back up must fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("eval", "reports", "refinemask", "baselines")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dst: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.csv", "*.json", "*.png"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def lint_available():
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: the test extra pins import-linter (pip install -e '.[test]')")


def test_the_house_keeps_every_contract(tmp_path, lint_available):
    res = _lint(_copy_tree(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "5 kept, 0 broken" in res.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("refinemask/detection/__init__.py", "import reports", "never imports reports or baselines"),
    ("refinemask/engine/trainer.py", "import baselines.htc", "never imports reports or baselines"),
    ("eval/coco.py", "import refinemask.config", "eval (the evaluator) imports nothing of ours"),
    ("reports/tables.py", "from refinemask.registry import PRESETS", "reports imports eval only"),
    ("baselines/htc.py", "import refinemask.cli", "baselines plug into the model package"),
    ("eval/masks.py", "import eval.boundary_f", "no import cycles"),
])
def test_an_arrow_back_up_fails_lint(tmp_path, lint_available, module, line, contract):
    tree = _copy_tree(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # added by the test\n")
    res = _lint(tree)
    assert res.returncode == 1, res.stdout + res.stderr
    broken = res.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, res.stdout
