"""Execute notebooks/walkthrough.ipynb end to end with nbclient (kernel ``python3`` = this interpreter).

The kernel spec is written into a temporary JUPYTER_PATH that points at ``sys.executable``, so the test needs no
``jupyter kernelspec install`` and works on a fresh clone and in CI; Jupyter's runtime and IPython folders are
temporary too, so nothing is written to the home directory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "walkthrough.ipynb"


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch):
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (rmbench tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return "python3"


def test_walkthrough_notebook_runs(python3_kernel):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    t0 = time.time()
    NotebookClient(nb, kernel_name=python3_kernel, timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    elapsed = time.time() - t0
    texts = [o.get("text", "") + json.dumps(o.get("data", {})) for c in nb.cells if c.cell_type == "code"
             for o in c.outputs]
    joined = "\n".join(texts)
    assert "0 failing: ok" in joined  # the regress cell
    assert "Table 12: IoU between boundary regions" in joined and "Table 14:" in joined
    assert "image/png" in joined  # the plots were displayed
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert elapsed < 60, f"the walkthrough took {elapsed:.0f} s (budget 30 s on a laptop)"
