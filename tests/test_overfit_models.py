"""The overfit proof for RefineMask, PointRend and HTC: the same 2 real images and budget as Mask R-CNN's test.

Each model (its real preset's mask branch / RoI heads on the overfit trunk of
:func:`refinemask.engine.overfit.run_overfit`) is trained on two coco_mini train2017 images and must reproduce
their masks: COCO mask AP >= 0.5 on those images through ``eval/``. Their F_1px is printed for the closing notes.
These runs take 1-3 minutes each on 2 CPU cores, so they are marked slow: ``make test`` runs Mask R-CNN's version
of the same path (tests/test_overfit.py) and CI's ``.ci/run`` runs these as well.
"""

from __future__ import annotations

import math

import pytest
import torch

from refinemask.engine.overfit import DEFAULT_IMAGE_IDS, run_overfit

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("preset", [
    "refinemask_r50_fpn_1x_coco",
    "point_rend_r50_fpn_1x_coco",
    "htc_without_semantic_r50_fpn_1x_coco",
    "htc_thing_semantic_r50_fpn_1x_coco",
])
def test_overfit_reproduces_masks(preset, tmp_path):
    res = run_overfit(preset, DEFAULT_IMAGE_IDS, tmp_path / preset, metrics=("coco", "boundary_f"))
    print(f"\n{preset}: mask AP {res['AP']:.3f}, AP50 {res['AP50']:.3f}, F1px {res['F1px']:.3f}, "
          f"{res['iters']} iterations, {res['total_time_s']:.0f} s")
    assert all(math.isfinite(v) for v in res["losses"].values())
    assert res["AP"] >= 0.5, f"{preset}: mask AP {res['AP']:.3f} on its training images (expected >= 0.5)"
    assert res["F1px"] is not None and 0.0 < res["F1px"] <= 1.0
