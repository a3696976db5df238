"""The pair pass (crop decoding, one pass, worker processes) equals full-image evaluation of every pair, exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from eval import pair_pass
from eval.boundary import _pair_counts, f_measure_multi
from eval.io import validate_gt, validate_results
from eval.masks import rle_crop, rle_to_mask
from eval.matching import gt_bbox, match, refinemask_window
from tests.constructed import constructed_set

TOLS = (1.0, 3.0, 5.0, 0.008)  # absolute pixels and a fraction of the diagonal
DS = (1.0, 2.0, 3.5)


def _brute_force(mt, window):
    """Every pair on full-image masks, as boundary F / accuracy were computed before the pass existed."""
    f, acc = [], []
    for m in mt.pairs:
        g_rle = mt.gt_rles[m["gt_id"]]
        g, p = rle_to_mask(g_rle), rle_to_mask(mt.pred_rles[m["pred_index"]])
        h, w = g.shape
        rs, cs = refinemask_window(gt_bbox(mt.annotation(m["gt_id"]), g_rle), h, w)
        if window == "full":
            f.append(f_measure_multi(p, g, TOLS))
        elif rs.stop - rs.start <= 1 or cs.stop - cs.start <= 1:
            f.append(None)
        else:
            f.append(f_measure_multi(p[rs, cs], g[rs, cs], TOLS))
        acc.append(_pair_counts(p, g, rs, cs, list(DS)) if rs.stop > rs.start and cs.stop > cs.start else None)
    return f, acc


@pytest.fixture(scope="module")
def sets(coco_gt_module, preds_a_module):
    out = []
    for seed in (0, 1, 2):
        gt, raw = constructed_set(seed)
        validate_gt(gt)
        out.append(match(gt, validate_results(copy.deepcopy(raw), gt)))
    gt = validate_gt(coco_gt_module)
    out.append(match(gt, validate_results(preds_a_module, gt)))
    return out


@pytest.fixture(scope="module")
def coco_gt_module():
    from tests.helpers import COCO_VAL_GT, _load

    return _load(COCO_VAL_GT)


@pytest.fixture(scope="module")
def preds_a_module():
    from tests.helpers import PREDS_A, _load

    return _load(PREDS_A)


@pytest.mark.parametrize("window", ["full", "crop"])
def test_pass_equals_full_image_evaluation(sets, window):
    for mt in sets:
        ref_f, ref_acc = _brute_force(mt, window)
        got = pair_pass.measure_pairs(mt, tolerances=TOLS, f_window=window, acc_ds=DS, jobs=1)
        assert len(mt.pairs) > 0
        for k in range(len(mt.pairs)):
            assert got.f[k] == ref_f[k], k  # exact: same floats, same counts
            if ref_acc[k] is None:
                assert not got.acc_valid[k]
            else:
                assert got.acc_valid[k]
                np.testing.assert_array_equal(got.acc[k], ref_acc[k])


def test_workers_give_the_same_numbers(sets, monkeypatch):
    monkeypatch.setattr(pair_pass, "PARALLEL_MIN_PAIRS", 0)
    mt = sets[-1]
    one = pair_pass.measure_pairs(mt, tolerances=TOLS, acc_ds=DS, jobs=1)
    two = pair_pass.measure_pairs(mt, tolerances=TOLS, acc_ds=DS, jobs=2)
    assert one.f == two.f
    np.testing.assert_array_equal(one.acc, two.acc)
    np.testing.assert_array_equal(one.acc_valid, two.acc_valid)


def test_matching_in_workers_is_the_same(coco_gt_module, preds_a_module):
    gt = validate_gt(coco_gt_module)
    res = validate_results(preds_a_module, gt)
    one, two = match(gt, res, jobs=1), match(gt, res, jobs=2)
    assert one.pairs == two.pairs and one.skipped_gt_ids == two.skipped_gt_ids
    assert one.gt_rles == two.gt_rles and one.pred_rles == two.pred_rles


def test_rle_crop_equals_decode_then_slice():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(m))
        r0, r1 = sorted(int(v) for v in rng.integers(0, h + 1, 2))
        c0, c1 = sorted(int(v) for v in rng.integers(0, w + 1, 2))
        np.testing.assert_array_equal(rle_crop(rle, slice(r0, r1), slice(c0, c1)), m[r0:r1, c0:c1])


def test_bad_jobs_refused(sets):
    from eval.errors import UsageError

    with pytest.raises(UsageError, match="jobs"):
        pair_pass.measure_pairs(sets[0], tolerances=(1,), jobs=0)
