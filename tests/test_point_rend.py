"""PointRend baseline (docs/models.md §4, §7): shapes, parameter counts, point sampling, importance sampling,
adaptive subdivision, the mmdet / detectron2 switch, the mmdet name mapping, and a full model on a real image.

CPU only, tiny inputs (one 333×500 COCO train image resized to a 192-pixel short side, few RoIs).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from baselines.convert import convert_mmdet_point_rend, map_mmdet_point_rend_key
from baselines.point_rend import (
    PointRendBranch,
    PointRendConfig,
    point_sample,
    regular_grid_points,
    sample_masks_at_points,
    sample_point_features,
    subdivision_inference,
    uncertain_grid_points,
    uncertain_point_coords_with_randomness,
)
from refinemask import build_model, count_parameters
from refinemask.config import SCHEDULE_1X, SCHEDULE_2X, SCHEDULE_3X
from refinemask.detection import RoIHeads
from refinemask.detection.mask_branch import RoIBatch
from refinemask.registry import PRESETS, get_preset
from tests.helpers import ROOT, load_coco_sample

TRAIN_DIR = ROOT / "data" / "coco_mini" / "train2017"
TRAIN_JSON = ROOT / "data" / "coco_mini" / "annotations" / "instances_train2017.json"

# docs/models.md §7
POINT_REND_PARAMS = 60_214_912  # BN eval-mode with trainable γ/β (mmdet layout)
POINT_REND_PARAMS_FROZEN_BN = 60_161_792
COARSE_HEAD_PARAMS = 18_176_080
POINT_HEAD_PARAMS = 285_776
MASK_RCNN_PARAMS = 44_396_336



def _meta_model(preset):
    with torch.device("meta"):
        return build_model(preset)


def _feats(b: int = 1, h: int = 64, w: int = 96, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"p{l}": torch.randn(b, 256, h // 2 ** (l - 2), w // 2 ** (l - 2), generator=g) for l in range(2, 7)}


# ----------------------------------------------------------------------------------------------------------------
# presets and parameter counts
# ----------------------------------------------------------------------------------------------------------------
def test_presets():
    names = {"point_rend_r50_fpn_1x_coco", "point_rend_detectron2_r50_fpn_1x_coco", "point_rend_r50_fpn_2x_coco",
             "point_rend_r101_fpn_2x_coco", "point_rend_x101_fpn_3x_ms_coco"}
    assert names <= set(PRESETS)
    p = get_preset("point_rend_r50_fpn_1x_coco")
    assert p.mask_head == "point_rend" and p.roi_head == "standard" and p.schedule == SCHEDULE_1X
    cfg = p.mask_head_cfg
    assert isinstance(cfg, PointRendConfig) and cfg.variant == "mmdet" and not cfg.use_pred_boxes
    assert (cfg.roi_size, cfg.coarse_size, cfg.train_num_points, cfg.oversample_ratio, cfg.importance_sample_ratio,
            cfg.subdivision_steps, cfg.subdivision_num_points) == (14, 7, 196, 3.0, 0.75, 5, 784)
    assert p.rpn.post_nms_top_n_train == 1000 and p.roi.loss_bbox == "l1" and p.score_thresh == 0.05
    assert "35.6" in p.paper_ref and "11.4" in p.paper_ref
    assert get_preset("point_rend_detectron2_r50_fpn_1x_coco").mask_head_cfg.use_pred_boxes
    assert get_preset("point_rend_r101_fpn_2x_coco").schedule == SCHEDULE_2X
    x = get_preset("point_rend_x101_fpn_3x_ms_coco")
    assert x.schedule == SCHEDULE_3X and x.multiscale_mode == "range" and x.backbone == "resnext101_64x4d"


def test_param_counts_match_spec():
    model = _meta_model("point_rend_r50_fpn_1x_coco")
    assert count_parameters(model) == POINT_REND_PARAMS
    mb = model.mask_branch
    assert count_parameters(mb.mask_head) == COARSE_HEAD_PARAMS and count_parameters(mb.point_head) == POINT_HEAD_PARAMS
    frozen = _meta_model(dataclasses.replace(get_preset("point_rend_r50_fpn_1x_coco"), norm="frozen_bn"))
    assert count_parameters(frozen) == POINT_REND_PARAMS_FROZEN_BN
    assert count_parameters(_meta_model("point_rend_detectron2_r50_fpn_1x_coco")) == POINT_REND_PARAMS
    # deeper backbones: docs/models.md §7 has no totals; the head adds the same to Mask R-CNN's count for every backbone
    for pr, mr in (("point_rend_r101_fpn_2x_coco", "mask_rcnn_r101_fpn_1x_coco"),
                   ("point_rend_x101_fpn_3x_ms_coco", "mask_rcnn_x101_fpn_3x_ms_coco")):
        diff = count_parameters(_meta_model(pr)) - count_parameters(_meta_model(mr))
        assert diff == POINT_REND_PARAMS - MASK_RCNN_PARAMS, pr  # 79,207,040 (R101), 118,113,152 (X101)


# ----------------------------------------------------------------------------------------------------------------
# point operations
# ----------------------------------------------------------------------------------------------------------------
def test_bin_centre_pooling_equals_aligned_roi_align_sampling_1():
    feats = _feats(2)
    boxes = [torch.tensor([[20.0, 30.0, 150.0, 200.0]]),
             torch.tensor([[40.5, 10.0, 90.0, 60.25], [100.0, 50, 300, 210]])]
    branch = PointRendBranch(5)
    pooled = branch.coarse_features(feats, boxes)
    assert pooled.shape == (3, 256, 14, 14)
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0]]), torch.cat(boxes)], dim=1)
    ref = roi_align(feats["p2"], rois, (14, 14), spatial_scale=0.25, sampling_ratio=1, aligned=True)
    torch.testing.assert_close(pooled, ref, atol=1e-4, rtol=1e-4)  # boxes inside the image: identical


def test_mask_point_targets_equal_grid_sample():
    g = torch.Generator().manual_seed(1)
    masks = (torch.rand(3, 40, 56, generator=g) > 0.5).to(torch.uint8)
    idx = torch.tensor([2, 0, 2, 1])
    pts = torch.rand(4, 50, 2, generator=g) * torch.tensor([60.0, 44.0]) - 2.0  # some points outside the mask
    got = sample_masks_at_points(masks, idx, pts)
    ref = point_sample(masks[idx][:, None].float(), pts / torch.tensor([56.0, 40.0]))[:, 0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_fine_grained_features_follow_the_box():
    # a feature map equal to the x pixel coordinate of each P2 cell centre: sampling returns the point's x
    h, w, stride = 20, 30, 4
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
    feat = xs.view(1, 1, 1, w).expand(1, 1, h, w).contiguous()
    boxes = [torch.tensor([[16.0, 8.0, 96.0, 72.0]])]
    rel = torch.tensor([[[0.0, 0.5], [0.25, 0.5], [1.0, 0.0]]])
    out = sample_point_features(feat, stride, boxes, rel)
    torch.testing.assert_close(out[0, 0], torch.tensor([16.0, 36.0, 96.0]))


# ----------------------------------------------------------------------------------------------------------------
# importance sampling (training) and subdivision (inference)
# ----------------------------------------------------------------------------------------------------------------
def test_importance_sampler_picks_most_uncertain_points():
    # hand-made logits: class 1's map is 0 (maximally uncertain) on columns 2-4 of 7 and -100 / +100 left / right
    # of them; class 0 is the opposite (uncertain outside that band), so the label must select the channel
    logits = torch.zeros((2, 2, 7, 7))
    logits[:, 1, :, :2] = -100.0
    logits[:, 1, :, 5:] = 100.0
    logits[:, 0, :, 2:5] = 50.0
    labels = torch.tensor([1, 1])
    coords = uncertain_point_coords_with_randomness(logits, labels, 196, 3, 0.75,
                                                    generator=torch.Generator().manual_seed(0))
    assert coords.shape == (2, 196, 2) and (coords >= 0).all() and (coords <= 1).all()
    # replay the two uniform draws: 588 candidates, then 49 fresh points
    g = torch.Generator().manual_seed(0)
    cand = torch.rand(2, 588, 2, generator=g)
    fresh = torch.rand(2, 49, 2, generator=g)
    torch.testing.assert_close(coords[:, 147:], fresh)
    unc = -point_sample(logits[:, 1:2], cand)[:, 0].abs()  # interpolated logits of the GT class
    for i in range(2):
        chosen = coords[i, :147]
        # every chosen point is a candidate, and none of the rejected candidates is more uncertain
        same = (chosen[:, None, :] == cand[i][None]).all(-1)  # (147, 588)
        assert (same.sum(1) == 1).all()
        picked = same.to(torch.uint8).argmax(1)
        rejected = torch.ones(588, dtype=torch.bool)
        rejected[picked] = False
        assert unc[i, picked].min() >= unc[i, rejected].max()
        # hand check: ~2/7 of the 588 candidates see only the zero columns (x ∈ [2.5/7, 4.5/7] after bilinear
        # interpolation with zero padding outside the map) — more than 147, so every chosen point lies there
        assert ((chosen[:, 0] >= 2.5 / 7) & (chosen[:, 0] <= 4.5 / 7)).all() and (unc[i, picked] == 0).all()


def test_uncertain_grid_points_are_cell_centres():
    unc = torch.zeros(1, 1, 4, 6)
    unc[0, 0, 1, 4] = 2.0
    unc[0, 0, 3, 0] = 1.0
    idx, coords = uncertain_grid_points(unc, 2)
    assert idx.tolist() == [[1 * 6 + 4, 3 * 6 + 0]]
    torch.testing.assert_close(coords, torch.tensor([[[4.5 / 6, 1.5 / 4], [0.5 / 6, 3.5 / 4]]]))


def test_subdivision_refines_exactly_the_chosen_cells():
    g = torch.Generator().manual_seed(3)
    init = torch.randn(2, 1, 7, 7, generator=g) * 4
    calls = []

    def marker(points):  # the "point head": a recognisable logit per step (100 + step number) at every point
        calls.append(points.clone())
        return torch.full(points.shape[:2], 100.0 + len(calls))

    for steps in (1, 2):
        calls.clear()
        out = subdivision_inference(init, marker, steps=steps, num_points=10)
        # replay: the previous map upsampled ×2 (bilinear, align_corners=False), its 10 most uncertain cells replaced
        ref = init
        for k in range(steps):
            ref = F.interpolate(ref, scale_factor=2, mode="bilinear", align_corners=False)
            n, _, h, w = ref.shape
            top = (-ref.abs()).view(n, -1).topk(10, dim=1).indices
            chosen = torch.zeros(n, h * w, dtype=torch.bool)
            chosen.scatter_(1, top, True)
            ref = torch.where(chosen.view(n, 1, h, w), torch.full_like(ref, 101.0 + k), ref)
        assert out.shape == (2, 7 * 2 ** steps, 7 * 2 ** steps)
        torch.testing.assert_close(out, ref[:, 0])
        # exactly 10 cells carry the marker after the last step; the point head saw their centres
        assert int((out == 100.0 + steps).sum()) == 2 * 10
        s = 7 * 2 ** steps
        ys, xs = torch.nonzero(out[0] == 100.0 + steps, as_tuple=True)
        centres = torch.stack([(xs + 0.5) / s, (ys + 0.5) / s], dim=1)
        assert torch.allclose(torch.sort(calls[-1][0], dim=0).values, torch.sort(centres, dim=0).values)


def test_subdivision_schedule_mmdet_and_detectron2():
    init = torch.randn(3, 1, 7, 7)
    sizes = []

    def fn(points):
        sizes.append(points.shape[1])
        return torch.zeros(points.shape[:2])

    out = subdivision_inference(init, fn, steps=5, num_points=784)  # mmdet: 14 skipped, 28 (all), 56, 112, 224
    assert out.shape == (3, 224, 224) and sizes == [784, 784, 784, 784]
    sizes.clear()
    out = subdivision_inference(init, fn, steps=3, num_points=784, init_resolution=28)  # detectron2
    assert out.shape == (3, 224, 224) and sizes == [784, 784, 784, 784]
    d2 = PointRendBranch(80, PointRendConfig(variant="detectron2"))
    assert (d2.init_resolution, d2.subdivision_steps, d2.output_size) == (28, 3, 224)


def test_mmdet_and_detectron2_variants_predict_the_same_masks():
    torch.manual_seed(0)
    feats = _feats(2)
    mm = PointRendBranch(6)
    d2 = PointRendBranch(6, PointRendConfig(variant="detectron2"))
    d2.load_state_dict(mm.state_dict())
    with torch.no_grad():  # a non-trivial point head: larger logits weights than the 0.001 init
        for b in (mm, d2):
            b.point_head.fc_logits.weight.copy_(torch.linspace(-0.2, 0.2, b.point_head.fc_logits.weight.numel())
                                                .view_as(b.point_head.fc_logits.weight))
            b.mask_head.fc_logits.weight.normal_(0, 0.01, generator=torch.Generator().manual_seed(1))
    boxes = [torch.tensor([[10.0, 12.0, 120.0, 90.0]]), torch.tensor([[0.0, 0.0, 60.0, 40.0], [50, 20, 200, 150]])]
    labels = [torch.tensor([3]), torch.tensor([0, 5])]
    p1 = mm.predict(RoIBatch(feats, boxes, labels))
    p2 = d2.predict(RoIBatch(feats, boxes, labels))
    assert p1.shape == (3, 224, 224) and ((p1 >= 0) & (p1 <= 1)).all()
    torch.testing.assert_close(p1, p2)
    # mmdet's 28×28 stage (14 skipped, every 28×28 cell recomputed) = point predictions on a regular 28×28 grid
    mm28 = PointRendBranch(6, PointRendConfig(subdivision_steps=2))
    mm28.load_state_dict(mm.state_dict())
    with torch.no_grad():
        coarse = mm(RoIBatch(feats, boxes, labels))
        direct = mm.point_logits(feats, boxes, coarse, regular_grid_points(3, 28))
        direct = direct[torch.arange(3), torch.tensor([3, 0, 5])]
    torch.testing.assert_close(mm28.predict(RoIBatch(feats, boxes, labels)), direct.sigmoid().view(3, 28, 28))


def test_branch_shapes_losses_and_empty_input():
    torch.manual_seed(0)
    feats = _feats(2)
    branch = PointRendBranch(5)
    boxes = [torch.tensor([[2.0, 3.0, 60.0, 50.0]]), torch.tensor([[0.0, 0.0, 30.0, 30.0], [40.0, 20.0, 150.0, 120.0]])]
    labels = [torch.tensor([4]), torch.tensor([0, 2])]
    assert branch(RoIBatch(feats, boxes, labels)).shape == (3, 5, 7, 7)
    gt = [torch.zeros(1, 128, 192, dtype=torch.uint8), torch.zeros(2, 128, 192, dtype=torch.uint8)]
    gt[0][0, 10:40, 10:50] = 1
    gt[1][1, 30:100, 50:140] = 1
    losses = branch.forward_train(RoIBatch(feats, boxes, labels, gt, [torch.tensor([0]), torch.tensor([0, 1])]))
    assert set(losses) == {"loss_mask", "loss_point"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert branch.point_head.fcs[0].weight.grad.abs().sum() > 0 and branch.mask_head.fcs[0].weight.grad.abs().sum() > 0
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    no_lab = [torch.zeros(0, dtype=torch.long)] * 2
    assert branch.predict(RoIBatch(feats, empty, no_lab)).shape == (0, 224, 224)
    zero = branch.forward_train(RoIBatch(feats, empty, no_lab, gt, no_lab))
    assert all(float(v.detach()) == 0.0 for v in zero.values())


def test_detectron2_variant_trains_on_predicted_boxes():
    torch.manual_seed(0)
    feats = _feats(1)
    seen = {}
    for variant in ("mmdet", "detectron2"):
        branch = PointRendBranch(3, PointRendConfig(variant=variant))
        heads = RoIHeads(3, mask_branch=branch).train()
        with torch.no_grad():
            heads.box_head.bbox_pred.weight.zero_()
            heads.box_head.bbox_pred.bias.fill_(0.5)  # every RoI regressed by the same deltas

        def spy(rois, _v=variant):
            seen[_v] = rois.boxes
            return {"loss_mask": rois.boxes[0].sum() * 0}

        branch.forward_train = spy
        gt = torch.tensor([[20.0, 20.0, 100.0, 90.0]])
        target = {"boxes": gt, "labels": torch.tensor([1]), "masks": torch.zeros(1, 128, 192, dtype=torch.uint8)}
        torch.manual_seed(1)
        heads(feats, [gt + 2.0], [(128, 192)], [target])
    # mmdet: the sampled positive proposals; detectron2: those boxes regressed by the GT-class deltas
    mm, d2 = seen["mmdet"][0], seen["detectron2"][0]
    assert mm.shape == d2.shape and mm.shape[0] >= 1
    ref = RoIHeads(3).box_coder.decode_single(torch.full_like(mm, 0.5), mm)
    torch.testing.assert_close(d2, ref.clamp(min=0).minimum(torch.tensor([192.0, 128.0, 192.0, 128.0])))
    assert not torch.allclose(mm, d2)


# ----------------------------------------------------------------------------------------------------------------
# mmdet name mapping
# ----------------------------------------------------------------------------------------------------------------
MMDET_POINT_REND_HEAD = {
    "roi_head.mask_head.downsample_conv.conv.weight": (256, 256, 2, 2),
    "roi_head.mask_head.downsample_conv.conv.bias": (256,),
    "roi_head.mask_head.fcs.0.weight": (1024, 12544),
    "roi_head.mask_head.fcs.0.bias": (1024,),
    "roi_head.mask_head.fcs.1.weight": (1024, 1024),
    "roi_head.mask_head.fcs.1.bias": (1024,),
    "roi_head.mask_head.fc_logits.weight": (3920, 1024),
    "roi_head.mask_head.fc_logits.bias": (3920,),
    **{f"roi_head.point_head.fcs.{i}.conv.weight": (256, 336, 1) for i in range(3)},
    **{f"roi_head.point_head.fcs.{i}.conv.bias": (256,) for i in range(3)},
    "roi_head.point_head.fc_logits.weight": (80, 336, 1),
    "roi_head.point_head.fc_logits.bias": (80,),
}


def test_mmdet_point_rend_names_cover_the_branch():
    branch = PointRendBranch(80)
    ours = {f"roi_heads.mask_branch.{k}": tuple(v.shape) for k, v in branch.state_dict().items()}
    fake = {k: torch.zeros(s) for k, s in MMDET_POINT_REND_HEAD.items()}
    converted = convert_mmdet_point_rend({"state_dict": fake}, trunk_mapper=False)
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    assert map_mmdet_point_rend_key("roi_head.bbox_head.fc_cls.weight") is None
    with pytest.raises(ValueError, match="roi_head.point_head.bogus"):
        convert_mmdet_point_rend({**fake, "roi_head.point_head.bogus.weight": torch.zeros(1)}, trunk_mapper=False)
    # a caller-supplied trunk mapper gets every other key; what it leaves over is an error
    seen = {}

    def trunk_mapper(sd):
        seen.update(sd)
        return {"backbone.x": sd["backbone.x"]}, {k: v for k, v in sd.items() if k != "backbone.x"}

    out = convert_mmdet_point_rend({**fake, "backbone.x": torch.zeros(1)}, trunk_mapper=trunk_mapper)
    assert set(seen) == {"backbone.x"} and "backbone.x" in out
    with pytest.raises(ValueError, match="neck.unknown"):
        convert_mmdet_point_rend({**fake, "backbone.x": torch.zeros(1), "neck.unknown": torch.zeros(1)},
                                 trunk_mapper=trunk_mapper)


def test_mmdet_point_rend_with_the_trunk_converter():
    import refinemask.convert  # noqa: F401  (an in-tree module: a broken import must fail, not skip)
    fake = {k: torch.zeros(s) for k, s in MMDET_POINT_REND_HEAD.items()}
    trunk = {"roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 1024), "rpn_head.rpn_conv.weight": torch.zeros(1)}
    out = convert_mmdet_point_rend({**fake, **trunk})  # default: refinemask.convert.convert_mmdet_trunk
    assert "roi_heads.box_head.cls_score.weight" in out and "rpn.head.conv.weight" in out


def test_presets_module_can_be_imported_first():
    import subprocess
    import sys

    code = ("import baselines.presets as m; from refinemask.registry import PRESETS; "
            "assert len(m.BASELINE_PRESETS) >= 17 and all(PRESETS[n] is p for n, p in m.BASELINE_PRESETS.items())")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ----------------------------------------------------------------------------------------------------------------
# the full model on a real image
# ----------------------------------------------------------------------------------------------------------------
def load_real_sample(img_id: int = 539216):
    return load_coco_sample("train", img_id, min_area=0.0, max_anns=None)


def shrink_for_cpu(model, proposals: int = 100, rois: int = 32, dets: int = 4):
    """Small input (short side 192) and few RoIs so that a full R50 model runs in seconds on CPU."""
    model.transform.test_scale = (320, 192)
    model.transform.train_scales = ((320, 192),)
    model.rpn.cfg = dataclasses.replace(model.rpn.cfg, post_nms_top_n_train=proposals, post_nms_top_n_test=proposals)
    model.roi_heads.sampler.batch_size_per_image = rois
    model.roi_heads.cfg = dataclasses.replace(model.roi_heads.cfg, detections_per_img=dets)
    return model


def check_detections(out: dict, h: int, w: int, max_dets: int) -> None:
    n = out["boxes"].shape[0]
    assert 1 <= n <= max_dets
    assert out["scores"].shape == (n,) and out["labels"].shape == (n,) and out["labels"].dtype == torch.int64
    assert out["masks"].shape == (n, h, w) and out["masks"].dtype == torch.bool
    assert ((out["labels"] >= 0) & (out["labels"] < 80)).all() and (out["scores"][:-1] >= out["scores"][1:]).all()
    b = out["boxes"]
    assert (b[:, :2] >= 0).all() and (b[:, 2] <= w + 1e-3).all() and (b[:, 3] <= h + 1e-3).all()


def test_full_model_train_and_eval_on_real_image():
    img, target = load_real_sample()
    torch.manual_seed(0)
    model = shrink_for_cpu(build_model("point_rend_r50_fpn_1x_coco")).train()
    losses = model([img], [target])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask", "loss_point"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    mb = model.mask_branch
    for p in (mb.mask_head.downsample_conv.weight, mb.mask_head.fc_logits.weight, mb.point_head.fcs[0].weight,
              mb.point_head.fc_logits.weight, model.roi_heads.box_head.fc6.weight,
              model.backbone.body.layer4[0].conv1.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (out,) = model([img])
    check_detections(out, *img.shape[-2:], max_dets=4)
