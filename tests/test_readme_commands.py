"""The README's commands run as written (a user's first try must not fail)."""

from __future__ import annotations

import json
import shlex

import pytest

from refinemask.cli import main
from tests.helpers import ROOT


def _readme_command(marker: str) -> list[str]:
    """The ``rmbench ...`` command of the README's bash block that follows the comment line ``marker``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line) + 1
    cmd = ""
    for line in lines[start:]:
        cmd += line.strip().rstrip("\\") + " "
        if not line.rstrip().endswith("\\"):
            break
    argv = shlex.split(cmd)
    assert argv[0] == "rmbench", argv
    return argv[1:]


@pytest.mark.slow
def test_the_readme_short_training_run_runs_to_the_end(tmp_path, monkeypatch):
    argv = _readme_command("# a tiny run on the bundled images")
    assert argv[0] == "train" and "--max-iters" in argv
    argv[argv.index("--work-dir") + 1] = str(tmp_path / "tiny")  # the one change: write into a temporary folder
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    assert main(argv) == 0
    rows = (tmp_path / "tiny" / "log.csv").read_text().splitlines()
    assert rows[-1].startswith("20,")  # all 20 iterations, every loss finite
    doc = json.loads((tmp_path / "tiny" / "metrics.json").read_text())
    assert doc["run"]["train"]["iterations"] == 20 and doc["run"]["train"]["backbone_weights"] == "random"
    assert doc["run"]["eval_set"]["images"] == 79


def test_the_readme_command_is_found():
    argv = _readme_command("# a tiny run on the bundled images")
    assert "--recalibrate-bn" in argv and argv[argv.index("--preset") + 1] == "mask_rcnn_r50_fpn_1x_coco"


def test_the_readme_analyze_command_gives_the_readme_numbers(tmp_path, monkeypatch):
    """The documented `rmbench analyze` example runs as written and reproduces the README's rendered row."""
    argv = _readme_command("# analyze the bundled prediction set A")
    assert argv[0] == "analyze"
    argv[argv.index("--out") + 1] = str(tmp_path / "a")
    monkeypatch.chdir(ROOT)
    assert main(argv) == 0
    doc = json.loads((tmp_path / "a" / "analysis.json").read_text())
    d, g = doc["tide"]["delta"], doc["good_box_bad_mask"]
    row = " | ".join(f"{100 * d[k]:+.2f}".replace("-", "−") for k in ("cls", "loc", "both", "dupe", "bkg", "missed"))
    row += f" | {g['count']} of {g['mask_false_positives']} mask FPs, ΔAP {100 * g['delta_ap']:+.2f} |"
    assert f"| {row}" in (ROOT / "README.md").read_text()
