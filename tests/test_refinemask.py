"""RefineMask head: boundary operator (Eq. 1 / A.1), BAR region, loss and merge (Eq. 2–6), stage shapes,
gradients, class-agnostic last stage, presets and parameter counts, and the full model on a real COCO image.

References are written independently of the code under test: hand-made masks, eval/boundary.py (NumPy, exact
window counting and the Eq. 1 distance definition), the golden Table 12 masks, explicit loops for Eq. 3–4 and a
NumPy bilinear (align_corners=True) upsampler for f_up.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from eval.boundary import conv_boundary_region, distance_boundary_region, region_iou
from refinemask import build_model, count_parameters
from refinemask.detection.mask_branch import RoIBatch
from refinemask.head import (
    RefineMaskBranch,
    RefineMaskConfig,
    bar_loss,
    bar_merge,
    bar_region,
    boundary_region,
    merge_stage_logits,
    point_roi_align,
    refine_mask_loss,
    semantic_target,
)
from refinemask.registry import PRESETS, get_preset
from tests.helpers import ROOT, load_coco_sample

TRAIN_DIR = ROOT / "data" / "coco_mini" / "train2017"
TRAIN_JSON = ROOT / "data" / "coco_mini" / "annotations" / "instances_train2017.json"
TABLE12 = ROOT / "data" / "golden" / "table12_region_iou.json"

# docs/models.md §7
RM_PARAMS_BN_AFFINE = 48_160_059
RM_PARAMS_FROZEN_BN = 48_106_939
RM_HEAD_PARAMS = 6_407_003



def _rows(text: str) -> np.ndarray:
    return np.array([[c == "1" for c in line.strip()] for line in text.strip().splitlines()])


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _up_np(x: np.ndarray, size: int) -> np.ndarray:
    """Independent bilinear resize with align_corners=True of a 2-D array to size×size."""
    def axis_weights(n_in):
        src = np.arange(size) * (n_in - 1) / (size - 1) if size > 1 else np.zeros(1)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, wr = axis_weights(x.shape[0])
    c0, c1, wc = axis_weights(x.shape[1])
    top = x[r0][:, c0] * (1 - wc) + x[r0][:, c1] * wc
    bot = x[r1][:, c0] * (1 - wc) + x[r1][:, c1] * wc
    return top * (1 - wr[:, None]) + bot * wr[:, None]


# ----------------------------------------------------------------------------------------------------------------
# boundary operator (Eq. 1, appendix A.1)
# ----------------------------------------------------------------------------------------------------------------
def test_boundary_operator_on_hand_made_masks():
    m = _rows("""
        0000000
        0111110
        0111110
        0111110
        0111110
        0111110
        0000000""")
    # width 1: every pixel whose 3×3 window holds the other label (= Eq. 1 with d = 1 and a half-pixel contour)
    expected_w1 = _rows("""
        1111111
        1111111
        1100011
        1100011
        1100011
        1111111
        1111111""")
    got = boundary_region(_t(m), 1).numpy()
    assert np.array_equal(got, expected_w1)
    assert np.array_equal(got, distance_boundary_region(m, 1, half_pixel_contour=True))
    # width 2: the only pixel of this square whose 5×5 window is single-label is the centre (both rules)
    assert boundary_region(_t(m), 2, threshold=0.0).sum() == 48 and not boundary_region(_t(m), 2)[3, 3]
    assert boundary_region(_t(m), 2).sum() == 48
    # a one-pixel hole: its ring has exactly 1 opposite pixel in the 5×5 window -> boundary for the appendix rule
    # (D > 0) but not for the code rule (> 0.1·25, i.e. ≥ 3 opposite pixels); the outside counts as background
    hole = np.ones((7, 7), bool)
    hole[3, 3] = False
    assert boundary_region(_t(hole), 2, threshold=0.0).all()
    expected_w2_code = _rows("""
        1111111
        1111111
        1100011
        1101011
        1100011
        1111111
        1111111""")
    assert np.array_equal(boundary_region(_t(hole), 2).numpy(), expected_w2_code)
    expected_w1_hole = _rows("""
        1111111
        1000001
        1011101
        1011101
        1011101
        1000001
        1111111""")
    assert np.array_equal(boundary_region(_t(hole), 1).numpy(), expected_w1_hole)
    assert np.array_equal(boundary_region(_t(hole), 1, threshold=0.0).numpy(), expected_w1_hole)  # same for w = 1
    # the outside of the RoI is background: a full mask has its border ring as boundary, an empty mask none
    full = boundary_region(torch.ones(5, 5), 1).numpy()
    assert full.sum() == 16 and not full[1:4, 1:4].any()
    assert not boundary_region(torch.zeros(5, 5), 1).any()
    # a single pixel: itself and its 8 neighbours (w = 1)
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    assert boundary_region(_t(one), 1).sum() == 9
    # leading dims, dtypes
    batch = torch.stack([_t(m), _t(m).flip(0)]).to(torch.uint8)
    assert boundary_region(batch, 1).shape == (2, 7, 7) and boundary_region(batch > 0, 1)[0].numpy().tolist() == \
        expected_w1.tolist()
    with pytest.raises(ValueError):
        boundary_region(torch.ones(4, 4), 0)


def test_boundary_operator_agrees_exactly_with_eval_numpy():
    rng = np.random.default_rng(0)
    masks = []
    for i in range(24):
        h, w = rng.integers(1, 30, size=2)
        masks.append(rng.random((h, w)) < (0.15, 0.5, 0.85)[i % 3])
    for m in masks:
        for width in (1, 2, 3):
            for thr in (0.0, 0.1):
                ours = boundary_region(_t(m), width, threshold=thr).numpy()
                assert np.array_equal(ours, conv_boundary_region(m, width, threshold=thr)), (m.shape, width, thr)


def test_boundary_iou_with_exact_definition_reproduces_table12_golden():
    golden = json.loads(TABLE12.read_text())
    for size in (28, 56, 112):
        masks = np.stack([mask_utils.decode(r["rle"][str(size)]).astype(bool) for r in golden["per_mask"]])
        for d in (1, 2):
            exact = [distance_boundary_region(m, d) for m in masks]  # Eq. 1
            for variant, thr in (("primary", 0.0), ("conv_refinemask_code_threshold", 0.1)):
                regions = boundary_region(torch.from_numpy(masks), d, threshold=thr).numpy()
                mean_iou = float(np.mean([region_iou(a, b) for a, b in zip(regions, exact)]))
                expected = golden["variants"][variant]["mean_iou"][f"{size}x{size}"][f"d={d}"]
                assert mean_iou == pytest.approx(expected, abs=1e-12)
                if variant == "primary":
                    assert mean_iou > 0.75  # paper Table 12: 0.76 / 0.75 / 0.80


# ----------------------------------------------------------------------------------------------------------------
# BAR: training region (Eq. 2), loss (Eq. 3-4), inference merge (Eq. 5-6)
# ----------------------------------------------------------------------------------------------------------------
def test_bar_region_eq2():
    pred = np.zeros((8, 8), bool)
    pred[2:6, 2:6] = True
    tgt = np.zeros((8, 8), bool)
    tgt[3:8, 1:5] = True
    for width in (1, 2):
        union = (conv_boundary_region(pred, width, threshold=0.1) | conv_boundary_region(tgt, width, threshold=0.1))
        expected = _up_np(union.astype(np.float64), 16) >= 0.5
        got = bar_region(_t(pred)[None], _t(tgt)[None], 16, width)[0].numpy()
        assert np.array_equal(got, expected)
    # ×2 upsampling of a 2×2 map with align_corners=True re-binarised = block replication
    r = bar_region(torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), torch.zeros(1, 2, 2), 4, 1)
    assert r.shape == (1, 4, 4) and r.all()  # every pixel of a 2×2 RoI touches the single fg pixel


def test_bar_loss_eq3_4_by_hand():
    z = torch.tensor([[[2.0, -1.0], [0.5, 3.0]], [[-2.0, 0.0], [1.0, -0.5]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]])
    r = torch.tensor([[[1, 0], [1, 0]], [[1, 1], [1, 1]]], dtype=torch.bool)

    def bce(zz, tt):
        p = 1 / (1 + math.exp(-zz))
        return -(tt * math.log(p) + (1 - tt) * math.log(1 - p))

    pix = [(n, i, j) for n in range(2) for i in range(2) for j in range(2)]
    num = sum(bce(float(z[n, i, j]), float(t[n, i, j])) for n, i, j in pix if r[n, i, j])
    delta = int(r.sum())  # Eq. 4: one normaliser over all RoIs' region pixels (6), not per instance
    assert float(bar_loss(z, t, r)) == pytest.approx(num / delta, rel=1e-6)
    per_instance = np.mean([sum(bce(float(z[n, i, j]), float(t[n, i, j])) for i in range(2) for j in range(2)
                                if r[n, i, j]) / int(r[n].sum()) for n in range(2)])
    assert float(bar_loss(z, t, r)) != pytest.approx(per_instance, rel=1e-3)
    empty = bar_loss(z.requires_grad_(), t, torch.zeros_like(r))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_refine_mask_loss_stages_and_switches():
    g = torch.Generator().manual_seed(0)
    sizes = (14, 28, 56, 112)
    logits = [torch.randn(3, s, s, generator=g) for s in sizes]
    targets = [(torch.rand(3, s, s, generator=g) > 0.5).float() for s in sizes]
    total, per = refine_mask_loss(logits, targets, (0.25, 0.5, 0.75, 1.0))
    for k in (0, 1):  # full-mask mean BCE
        full = F.binary_cross_entropy_with_logits(logits[k], targets[k])
        assert float(per[k]) == pytest.approx(float(full), rel=1e-6)
    # stage 2: region from stage-1 prediction and target (width 2), Eq. 3-4
    p1 = logits[1].sigmoid() >= 0.5
    r2 = bar_region(p1, targets[1], 56, 2)
    assert float(per[2]) == pytest.approx(float(bar_loss(logits[2], targets[2], r2)), rel=1e-6)
    assert float(total) == pytest.approx(sum(w * float(l) for w, l in zip((0.25, 0.5, 0.75, 1.0), per)), rel=1e-6)
    # w/o BAR (Table 7): every stage full-mask BCE
    _, per_nobar = refine_mask_loss(logits, targets, (0.25, 0.5, 0.75, 1.0), bar=False)
    assert float(per_nobar[3]) == pytest.approx(float(F.binary_cross_entropy_with_logits(logits[3], targets[3])))
    # no RoIs: zero loss that keeps the graph
    empty = [torch.zeros(0, s, s, requires_grad=True) for s in sizes]
    z, _ = refine_mask_loss(empty, [torch.zeros(0, s, s) for s in sizes], (0.25, 0.5, 0.75, 1.0))
    assert float(z.detach()) == 0.0 and z.requires_grad
    with pytest.raises(ValueError):
        refine_mask_loss(logits, targets, (1.0,))


def test_inference_merge_eq6_hand_made():
    # previous merged mask M'^1 (4×4): left half foreground
    prev = torch.tensor([[3.0, 3.0, -3.0, -3.0]] * 4)[None]
    cur = torch.full((1, 8, 8), 7.0)  # stage-2 logits M^2
    # B_P (width 1): fg pixels touch the RoI border or the bg column, column 2 touches fg, column 3 only sees
    # background and the (background) outside -> non-boundary. f_up(B_P) at 8×8 (align_corners=True, >= 0.5):
    # output columns map to 3·j/7 = 0, .43, .86, 1.29, 1.71, 2.14, 2.57, 3 -> columns 6, 7 are non-boundary.
    f_up_b = torch.ones(1, 8, 8)
    f_up_b[..., 6:] = 0
    up_prev = torch.from_numpy(_up_np(prev[0].numpy().astype(np.float64), 8)).float()[None]
    eq6 = f_up_b * cur + (1 - f_up_b) * up_prev  # Eq. 6 with the code's binarised f_up
    merged = bar_merge(prev, cur, width=1)
    torch.testing.assert_close(merged, eq6)
    assert torch.equal(merged[..., :6], cur[..., :6])
    # Eq. 5-6 chain from stage 1: stage 0 is ignored, stages 2 and 3 only override the boundary band
    s0 = torch.randn(1, 2, 2) * 100  # must not matter
    s3 = torch.full((1, 16, 16), -5.0)
    chained = merge_stage_logits([s0, prev, cur, s3])
    torch.testing.assert_close(chained, bar_merge(bar_merge(prev, cur), s3))
    assert torch.equal(merge_stage_logits([torch.zeros(1, 2, 2), prev, cur, s3]), chained)


# ----------------------------------------------------------------------------------------------------------------
# the branch: shapes (docs/models.md §2.3 stage table), gradients, class-agnostic last stage, label-channel shortcut
# ----------------------------------------------------------------------------------------------------------------
def _feats_boxes(seed=0, b=2, h=64, w=96):
    g = torch.Generator().manual_seed(seed)
    feats = {f"p{l}": torch.randn(b, 256, h // 2 ** l, w // 2 ** l, generator=g) for l in range(2, 7)}
    boxes = [torch.tensor([[2.0, 3.0, 30.0, 40.0]]), torch.tensor([[0.0, 0.0, 8.0, 8.0], [10.0, 5.0, 90.0, 60.0]])][:b]
    labels = [torch.tensor([4]), torch.tensor([0, 2])][:b]
    gt = torch.zeros(3, h, w, dtype=torch.uint8)
    gt[0, 5:35, 4:26] = 1
    gt[1, 1:7, 1:7] = 1
    gt[2, 10:55, 15:85] = 1
    return feats, boxes, labels, [gt[:1], gt[1:]], [torch.tensor([0]), torch.tensor([0, 1])]


def test_stage_shapes_match_spec_table():
    branch = RefineMaskBranch(80)
    feats, boxes, labels, _, _ = _feats_boxes()
    seen = {}
    for k, st in enumerate(branch.stages):
        st.register_forward_hook(lambda mod, args, out, k=k: seen.__setitem__(k, (tuple(args[0].shape),
                                 tuple(args[2].shape), tuple(args[3].shape), tuple(out.shape))))
    last = branch.stages[2]
    plain_logits = last.forward_logits

    def spy(x, z, sem, q, w, b):  # the last SFM runs through forward_logits: record what forward would give
        seen[2] = (tuple(x.shape), tuple(sem.shape), tuple(q.shape), tuple(last(x, z, sem, q).shape))
        return plain_logits(x, z, sem, q, w, b)

    last.forward_logits = spy
    with torch.no_grad():
        logits, sem = branch.forward_stages(RoIBatch(feats, boxes, labels))
    assert [tuple(z.shape) for z in logits] == [(3, 14, 14), (3, 28, 28), (3, 56, 56), (3, 112, 112)]
    assert tuple(sem.shape) == (2, 1, 16, 24)  # semantic mask on P2 (stride 4)
    # stage | SFM input | semantic RoI features / mask | fused + 2 masks
    assert seen[0] == ((3, 256, 14, 14), (3, 256, 14, 14), (3, 1, 14, 14), (3, 128, 28, 28))
    assert seen[1] == ((3, 128, 28, 28), (3, 128, 28, 28), (3, 1, 28, 28), (3, 64, 56, 56))
    assert seen[2] == ((3, 64, 56, 56), (3, 64, 56, 56), (3, 1, 56, 56), (3, 32, 112, 112))
    assert [st.fuse_in.in_channels for st in branch.stages] == [514, 258, 130]
    assert [st.transform_out.out_channels for st in branch.stages] == [126, 62, 30]
    assert [m.in_channels for m in branch.stage_logits] == [256, 128, 64, 32]
    assert [st.fusion.dilations for st in branch.stages] == [(1, 3, 5)] * 3
    assert branch.mask_size == 112
    branch.eval()
    probs = branch.predict(RoIBatch(feats, boxes, labels))
    assert probs.shape == (3, 112, 112) and ((probs >= 0) & (probs <= 1)).all()
    none = branch.predict(RoIBatch(feats, [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2))
    assert none.shape == (0, 112, 112)


def test_label_channel_shortcut_equals_full_classifier():
    branch = RefineMaskBranch(7)
    x = torch.randn(4, 128, 28, 28)
    labels = torch.tensor([6, 0, 3, 3])
    full = branch.stage_logits[1](x)
    torch.testing.assert_close(branch._label_logits(1, x, labels), full[torch.arange(4), labels], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_semantic", [True, False])
def test_last_sfm_classifier_shortcut_equals_classifier_on_its_output(with_semantic):
    """SFM.forward_logits (the last stage never builds F^{k+1} at 112×112) = 1×1 classifier row on forward()."""
    from refinemask.head.sfm import SFM

    torch.manual_seed(0)
    sfm = SFM(64, with_semantic=with_semantic)
    x = torch.randn(3, 64, 14, 14, requires_grad=True)
    z = torch.randn(3, 1, 14, 14)
    sem = torch.randn(3, 64, 14, 14) if with_semantic else None
    q = torch.rand(3, 1, 14, 14) if with_semantic else None
    w, b = torch.randn(3, 32), torch.randn(3)
    ref = torch.einsum("nchw,nc->nhw", sfm(x, z, sem, q), w) + b[:, None, None]
    out = sfm.forward_logits(x, z, sem, q, w, b)
    assert out.shape == (3, 28, 28)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # same gradients for the input and every parameter (the identity ReLU after Up(g) passes the same gradient)
    params = [x] + [p for n, p in sfm.named_parameters() if not n.startswith("semantic_in")]  # pooled by the branch
    g_ref = torch.autograd.grad(ref.square().sum(), params)
    g_out = torch.autograd.grad(out.square().sum(), params)
    for a, c in zip(g_out, g_ref):
        _assert_close_scaled(a, c)


def test_channels_last_branch_equals_contiguous_branch():
    """The NHWC default (set_channels_last) changes speed, not results: eval logits, losses and gradients."""
    import copy

    torch.manual_seed(0)
    nhwc = RefineMaskBranch(5)
    assert nhwc.channels_last
    nchw = copy.deepcopy(nhwc)
    nchw.channels_last = False
    feats, boxes, labels, gt, idx = _feats_boxes()
    for a, c in zip(nhwc.parameters(), nchw.parameters()):
        assert torch.equal(a, c)
    la = nhwc.forward_train(RoIBatch(feats, boxes, labels, gt, idx))
    lc = nchw.forward_train(RoIBatch(feats, boxes, labels, gt, idx))
    for k in la:
        torch.testing.assert_close(la[k], lc[k], rtol=1e-5, atol=1e-6)
    sum(la.values()).backward()
    sum(lc.values()).backward()
    for (n, a), c in zip(nhwc.named_parameters(), nchw.parameters()):
        _assert_close_scaled(a.grad, c.grad, msg=n)
    nhwc.eval(), nchw.eval()
    with torch.no_grad():
        za, _ = nhwc.forward_stages(RoIBatch(feats, boxes, labels))
        zc, _ = nchw.forward_stages(RoIBatch(feats, boxes, labels))
        for a, c in zip(za, zc):
            _assert_close_scaled(a, c)
        # float32 summation order only: the merged masks (≥ 0.5) are identical
        assert torch.equal(nhwc(RoIBatch(feats, boxes, labels)) >= 0, nchw(RoIBatch(feats, boxes, labels)) >= 0)


def _assert_close_scaled(a, b, rel=1e-5, msg=None):
    """|a − b| ≤ rel · max|b| elementwise: float32 reassociation error grows with the tensor's scale."""
    tol = rel * float(b.abs().max()) + 1e-12
    torch.testing.assert_close(a, b, rtol=0, atol=tol, msg=msg)


def test_gradients_reach_semantic_head_and_every_stage():
    torch.manual_seed(0)
    branch = RefineMaskBranch(5)
    feats, boxes, labels, gt, idx = _feats_boxes()
    losses = branch.forward_train(RoIBatch(feats, boxes, labels, gt, idx))
    assert set(losses) == {"loss_mask", "loss_semantic"} and all(torch.isfinite(v) for v in losses.values())
    losses["loss_mask"].backward(retain_graph=True)
    # the instance losses alone reach the semantic head through the semantic features and mask of every SFM
    assert branch.semantic_head.convs[0].weight.grad.abs().sum() > 0
    assert branch.semantic_head.logits.weight.grad.abs().sum() > 0
    losses["loss_semantic"].backward()
    no_grad = [n for n, p in branch.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # only the unused rows of the class-specific classifiers (labels 1, 3) may be zero
    assert no_grad == []
    for k in range(4):
        g = branch.stage_logits[k].weight.grad[:, :, 0, 0].abs().sum(1)
        assert (g[[0, 2, 4]] > 0).all() and (g[[1, 3]] == 0).all()
    # semantic target = union of the GT masks, at stride 4
    tgt = semantic_target(gt, (16, 24), (64, 96))
    assert tgt.shape == (2, 16, 24) and tgt[0].sum() > 0 and set(tgt.unique().tolist()) <= {0.0, 1.0}
    union = (gt[1].amax(0).float()[None, None])
    assert torch.equal(tgt[1], (F.interpolate(union, size=(16, 24), mode="bilinear") >= 0.5).float()[0, 0])


def test_class_agnostic_last_stage_lvis():
    p = get_preset("refinemask_r50_fpn_1x_lvis")
    with torch.device("meta"):
        model = build_model(p)
    branch = model.roi_heads.mask_branch
    assert branch.stage_num_classes == [1203, 1203, 1203, 1]
    assert count_parameters(model) == 54_419_300 and count_parameters(branch) == 6_910_869  # docs/models.md §7
    small = RefineMaskBranch(6, dataclasses.replace(p.mask_head_cfg))
    assert small.stage_logits[3].out_channels == 1 and small.stage_logits[2].out_channels == 6
    x = torch.randn(3, 32, 112, 112)
    for labels in (torch.tensor([0, 1, 5]), torch.tensor([5, 5, 2])):  # the label is ignored by the last stage
        torch.testing.assert_close(small._label_logits(3, x, labels), small.stage_logits[3](x)[:, 0])
    feats, boxes, labels, gt, idx = _feats_boxes(b=1)
    losses = small.forward_train(RoIBatch({k: v[:1] for k, v in feats.items()}, boxes, labels, gt[:1], idx[:1]))
    sum(losses.values()).backward()
    assert small.stage_logits[3].weight.grad.abs().sum() > 0


def test_point_roi_align_is_bin_centre_sampling():
    feat = torch.randn(2, 5, 20, 24)
    rois = torch.tensor([[0, 8.0, 10.0, 60.0, 50.0], [1, 20.0, 4.0, 44.0, 70.0], [0, 30.0, 30.0, 31.0, 33.0]])
    from torchvision.ops import roi_align

    ref = roi_align(feat, rois, (7, 7), 0.25, 1, True)  # one sample at each bin centre, inside the map
    torch.testing.assert_close(point_roi_align(feat, rois, 7, 0.25), ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# presets and parameter counts
# ----------------------------------------------------------------------------------------------------------------
_MAIN = ["refinemask_r50_fpn_1x_coco", "refinemask_r50_fpn_2x_coco", "refinemask_r101_fpn_1x_coco",
         "refinemask_r101_fpn_2x_coco", "refinemask_x101_fpn_3x_ms_coco", "refinemask_r50_fpn_1x_lvis",
         "refinemask_r50_fpn_cityscapes", "refinemask_r50_fpn_1x_coco_simple"]
_ABLATIONS = {
    **{f"stages{n}": {"stage_sizes", "stage_loss_weights"} for n in (1, 2, 4)},
    "stages3": set(),
    **{f"fusion_{k}": {"fusion"} for k in ("conv1x1", "conv3x3", "parallel3x3")},
    "fusion_sfm": set(),
    "no_semantic": {"semantic_head"},
    "last_stage_only": {"stage_loss_weights", "bar"},
    "no_bar": {"bar"},
    "bw1": {"boundary_width_train"}, "bw2": set(), "bw3": {"boundary_width_train"},
}


def _diff(a, b) -> set[str]:
    """Fields that differ, plus a Preset's derived branch selectors (``mask_head``, ``roi_head``)."""
    names = [f.name for f in dataclasses.fields(a)] + [n for n in ("mask_head", "roi_head") if hasattr(type(a), n)]
    return {n for n in names if getattr(a, n) != getattr(b, n)}


def test_presets_main_rows():
    for name in _MAIN:
        p = get_preset(name)
        assert p.mask_head == "refinemask" and isinstance(p.mask_head_cfg, RefineMaskConfig)
        assert (p.roi.loss_cls_weight, p.roi.loss_bbox_weight, p.schedule.grad_clip_norm) == (2.0, 2.0, 35.0), name
    base = get_preset("refinemask_r50_fpn_1x_coco")
    mrcnn = get_preset("mask_rcnn_r50_fpn_1x_coco")
    assert _diff(base, mrcnn) - {"name", "paper_ref", "notes"} == {"mask_head", "mask_head_cfg", "schedule", "roi"}
    assert _diff(base.roi, mrcnn.roi) == {"loss_cls_weight", "loss_bbox_weight"}
    assert _diff(base.schedule, mrcnn.schedule) == {"grad_clip_norm"}
    cfg = base.mask_head_cfg
    assert (cfg.stage_sizes, cfg.stage_loss_weights, cfg.dilations) == \
        ((14, 28, 56, 112), (0.25, 0.5, 0.75, 1.0), (1, 3, 5))
    assert (cfg.boundary_width_train, cfg.boundary_width_test, cfg.semantic_loss_weight, cfg.bar) == (2, 1, 1.0, True)
    x = get_preset("refinemask_x101_fpn_3x_ms_coco")
    assert (x.backbone, x.schedule.epochs, x.multiscale_mode, sorted(min(s) for s in x.train_scales)) == \
        ("resnext101_64x4d", 36, "range", [640, 800])
    assert get_preset("refinemask_r101_fpn_2x_coco").schedule.lr_steps == (16, 22)
    lvis = get_preset("refinemask_r50_fpn_1x_lvis")
    assert (lvis.num_classes, lvis.score_thresh, lvis.max_dets, lvis.sampler) == (1203, 1e-4, 300, "class_balanced")
    assert _diff(lvis.mask_head_cfg, cfg) == {"last_stage_class_agnostic"}
    assert lvis.mask_head_cfg.last_stage_class_agnostic
    cs = get_preset("refinemask_r50_fpn_cityscapes")
    assert (cs.num_classes, cs.schedule.effective_epochs, cs.schedule.lr_steps) == (8, 64, (7,))
    assert cs.test_scale == (2048, 1024)
    assert cs.roi.loss_bbox == "smooth_l1" and cs.schedule.lr_for_batch(8) == pytest.approx(0.01)
    assert sorted(min(s) for s in cs.train_scales) == [800, 1024] and cs.mask_head_cfg == cfg
    simple = get_preset("refinemask_r50_fpn_1x_coco_simple").mask_head_cfg
    assert (simple.head, simple.fusion, simple.stage_loss_weights, simple.pre_upsample_last_stage) == \
        ("simple", "sfm_avg", (0.5, 0.75, 0.75, 1.0), False)


def test_ablation_presets_change_only_what_the_paper_changed():
    base = get_preset("refinemask_r50_fpn_1x_coco")
    for suffix, fields in _ABLATIONS.items():
        p = get_preset(f"refinemask_r50_fpn_1x_coco_{suffix}")
        assert _diff(p, base) - {"name", "paper_ref", "notes"} <= {"mask_head_cfg"}, suffix
        assert _diff(p.mask_head_cfg, base.mask_head_cfg) == fields, suffix
        assert p.paper_ref.startswith("Table")
    assert get_preset("refinemask_r50_fpn_1x_coco_stages1").mask_head_cfg.output_size == 28
    assert get_preset("refinemask_r50_fpn_1x_coco_stages4").mask_head_cfg.stage_sizes[-1] == 224
    assert get_preset("refinemask_r50_fpn_1x_coco_last_stage_only").mask_head_cfg.stage_loss_weights == (0, 0, 0, 1.0)
    assert get_preset("refinemask_r50_fpn_1x_coco_bw3").mask_head_cfg.boundary_width_train == 3
    # every ablation builds, with the expected structure
    for suffix in ("stages1", "stages4", "fusion_conv1x1", "fusion_conv3x3", "fusion_parallel3x3", "no_semantic"):
        with torch.device("meta"):
            b = build_model(f"refinemask_r50_fpn_1x_coco_{suffix}").roi_heads.mask_branch
        if suffix.startswith("stages"):
            assert len(b.stages) == int(suffix[-1]) and b.mask_size == 14 * 2 ** int(suffix[-1])
        elif suffix == "no_semantic":
            assert b.semantic_head is None and b.stages[0].fuse_in.in_channels == 257
        elif suffix == "fusion_parallel3x3":
            assert b.stages[0].fusion.dilations == (1, 1, 1)
        else:
            assert b.stages[0].fusion.conv.kernel_size == ((1, 1) if suffix.endswith("1x1") else (3, 3))


def test_param_counts_match_spec():
    with torch.device("meta"):
        model = build_model("refinemask_r50_fpn_1x_coco")
        frozen = build_model(dataclasses.replace(get_preset("refinemask_r50_fpn_1x_coco"), norm="frozen_bn"))
        simple = build_model("refinemask_r50_fpn_1x_coco_simple")
    assert count_parameters(model) == RM_PARAMS_BN_AFFINE
    assert count_parameters(frozen) == RM_PARAMS_FROZEN_BN
    assert count_parameters(simple) == 48_070_734 and count_parameters(simple.roi_heads.mask_branch) == 6_317_678
    b = model.roi_heads.mask_branch
    assert count_parameters(b) == RM_HEAD_PARAMS
    # docs/models.md §7 breakdown (each SFM count includes its stage's classifier, as the official SFMStage does)
    assert count_parameters(b.instance_convs) == 1_180_160
    assert count_parameters(b.semantic_head.convs) == 2_360_320 and count_parameters(b.semantic_head.logits) == 257
    sfm = [count_parameters(b.stages[k]) + count_parameters(b.stage_logits[k]) for k in range(3)]
    assert sfm == [2_152_398, 560_142, 151_086] and count_parameters(b.stage_logits[3]) == 2_640


def test_presets_module_can_be_imported_first():
    code = ("import refinemask.presets.refinemask as m; from refinemask.registry import PRESETS; "
            "assert all(n in PRESETS for n in m.REFINEMASK_PRESETS) and len(m.REFINEMASK_PRESETS) >= 20; "
            "assert 'mask_rcnn_r50_fpn_1x_coco' in PRESETS")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    from refinemask.presets.refinemask import REFINEMASK_PRESETS

    assert all(PRESETS[n] is p for n, p in REFINEMASK_PRESETS.items())


# ----------------------------------------------------------------------------------------------------------------
# the full model on a real COCO train image
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_sample():
    return load_coco_sample("train", 84533, min_area=400, max_anns=3)


@pytest.fixture(scope="module")
def rm_model():
    torch.manual_seed(0)
    model = build_model("refinemask_r50_fpn_1x_coco")
    model.transform.test_scale = (256, 160)  # short side 160: CPU time
    model.transform.train_scales = ((256, 160),)
    model.rpn.cfg = dataclasses.replace(model.rpn.cfg, post_nms_top_n_test=100)
    return model


def test_full_model_train_forward_on_real_image(rm_model, train_sample):
    img, target = train_sample
    model = rm_model.train()
    model.roi_heads.sampler.batch_size_per_image = 32  # ≤ 8 positive RoIs: CPU time
    model.zero_grad(set_to_none=True)
    losses = model([img], [target])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask", "loss_semantic"}
    assert all(v.dim() == 0 and torch.isfinite(v) and v >= 0 for v in losses.values())
    sum(losses.values()).backward()
    b = model.mask_branch
    assert b.semantic_head.convs[0].weight.grad.abs().sum() > 0 and b.stages[2].fusion.merge.weight.grad.abs().sum() > 0
    assert model.backbone.fpn.layer_blocks[0][0].weight.grad.abs().sum() > 0  # P2 receives the semantic gradient


def test_full_model_eval_forward_masks_at_image_resolution(rm_model, train_sample):
    img, _ = train_sample
    model = rm_model.eval()
    model.roi_heads.cfg = dataclasses.replace(model.roi_heads.cfg, detections_per_img=5, score_thresh=0.0)
    with torch.no_grad():
        (out,) = model([img])
    h, w = img.shape[-2:]
    n = out["boxes"].shape[0]
    assert 1 <= n <= 5
    assert out["masks"].shape == (n, h, w) and out["masks"].dtype == torch.bool
    assert out["scores"].shape == (n,) and out["labels"].dtype == torch.int64
    ys, xs = torch.nonzero(out["masks"].any(0), as_tuple=True)
    if ys.numel():  # masks stay inside their boxes (up to a pixel of bilinear spill)
        assert xs.max() <= out["boxes"][:, 2].max() + 1 and ys.max() <= out["boxes"][:, 3].max() + 1
