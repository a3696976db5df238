"""HTC baseline (docs/models.md §5, §7): parameter counts of the three semantic variants, stage-wise assignment and the
interleaved re-sampling, cascade inference (averaged stage logits and mask probabilities), the semantic labels
without COCO-stuff, the stuff-map option and its errors, the mmdet name mapping, and full models on a real image.

CPU only, tiny inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BoxCoder

from baselines.convert import convert_mmdet_htc, map_mmdet_htc_key
from baselines.htc import (
    HTCConfig,
    HTCRoIHeads,
    build_htc_roi_heads,
    check_stuff_maps,
    load_stuff_map,
    semantic_targets,
    thing_semantic_labels,
)
from refinemask import build_model, count_parameters
from refinemask.config import SCHEDULE_1X, SCHEDULE_2X
from refinemask.registry import PRESETS, get_preset
from tests.test_point_rend import check_detections, load_real_sample, shrink_for_cpu

# docs/models.md §7 (mmdet layout, BN γ/β counted) and building blocks
HTC_PARAMS = {"stuff": 80_258_293, "none": 77_456_190, "things": 80_232_079}
HTC_FROZEN_BN = {"stuff": 80_205_173, "none": 77_403_070}
HTC_BOX_HEAD = 13_982_805
FCN_MASK_HEAD = 2_643_280
CONV_RES = 65_792
SEMANTIC_HEAD = 2_802_103
MASK_RCNN_PARAMS = 44_396_336
VARIANT_PRESET = {"stuff": "htc_r50_fpn_1x_coco", "none": "htc_without_semantic_r50_fpn_1x_coco",
                  "things": "htc_thing_semantic_r50_fpn_1x_coco"}


def _meta_model(preset):
    with torch.device("meta"):
        return build_model(preset)


def _feats(b: int = 1, h: int = 64, w: int = 96, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"p{l}": torch.randn(b, 256, h // 2 ** (l - 2), w // 2 ** (l - 2), generator=g) for l in range(2, 7)}


def _small_heads(semantic: str = "none", num_classes: int = 3, rois: int = 32) -> HTCRoIHeads:
    cfg = dataclasses.replace(get_preset("htc_r50_fpn_1x_coco").roi, batch_size_per_image=rois)
    return HTCRoIHeads(num_classes, cfg, HTCConfig(semantic=semantic))


# ----------------------------------------------------------------------------------------------------------------
# presets and parameter counts
# ----------------------------------------------------------------------------------------------------------------
def test_presets():
    for row in ("r50_fpn_1x_coco", "r50_fpn_2x_coco", "r101_fpn_2x_coco", "x101_fpn_2x_coco"):
        for prefix, semantic in (("htc", "stuff"), ("htc_without_semantic", "none"), ("htc_thing_semantic", "things")):
            p = PRESETS[f"{prefix}_{row}"]
            assert p.roi_head == "htc" and isinstance(p.mask_head_cfg, HTCConfig)
            assert p.mask_head_cfg.semantic == semantic
    p = get_preset("htc_without_semantic_r50_fpn_1x_coco")
    assert p.schedule == SCHEDULE_1X and get_preset("htc_r101_fpn_2x_coco").schedule == SCHEDULE_2X
    assert p.rpn.post_nms_top_n_train == 2000 and p.rpn.loss_bbox == "smooth_l1" and p.rpn.smooth_l1_beta == 1 / 9
    assert p.roi.loss_bbox == "smooth_l1" and p.roi.smooth_l1_beta == 1.0 and p.score_thresh == 0.001
    assert (p.roi.nms_thresh, p.max_dets, p.roi.batch_size_per_image, p.roi.positive_fraction) == (0.5, 100, 512, 0.25)
    h = p.mask_head_cfg
    assert h.stage_iou_thrs == (0.5, 0.6, 0.7) and h.stage_loss_weights == (1.0, 0.5, 0.25)
    assert h.interleaved and h.mask_info_flow and h.semantic_fusion == ("bbox", "mask")
    heads = build_htc_roi_heads(get_preset("htc_r50_fpn_1x_coco"))
    assert [c.weights for c in heads.box_coders] == [
        (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (1 / 0.033, 1 / 0.033, 1 / 0.067, 1 / 0.067)]
    assert "37.4" in get_preset("htc_r50_fpn_1x_coco").paper_ref


def test_param_counts_match_spec():
    for semantic, preset in VARIANT_PRESET.items():
        model = _meta_model(preset)
        assert count_parameters(model) == HTC_PARAMS[semantic], preset
        rh = model.roi_heads
        assert [count_parameters(b) for b in rh.bbox_head] == [HTC_BOX_HEAD] * 3
        counts = [count_parameters(m) for m in rh.mask_branch.mask_head]
        assert counts == [FCN_MASK_HEAD] + [FCN_MASK_HEAD + CONV_RES] * 2
        assert rh.mask_branch.mask_head[0].conv_res is None
        if semantic == "stuff":
            assert count_parameters(rh.semantic_head) == SEMANTIC_HEAD
        assert (rh.semantic_head is None) == (semantic == "none")
    for semantic in ("stuff", "none"):
        frozen = _meta_model(dataclasses.replace(get_preset(VARIANT_PRESET[semantic]), norm="frozen_bn"))
        assert count_parameters(frozen) == HTC_FROZEN_BN[semantic]
    # deeper backbones: same head on top of Mask R-CNN's R101 / X101 trunk (99,250,421 and 138,156,533 with stuff)
    for htc, mr in (("htc_r101_fpn_2x_coco", "mask_rcnn_r101_fpn_1x_coco"),
                    ("htc_without_semantic_x101_fpn_2x_coco", "mask_rcnn_x101_fpn_3x_ms_coco")):
        semantic = get_preset(htc).mask_head_cfg.semantic
        diff = count_parameters(_meta_model(htc)) - count_parameters(_meta_model(mr))
        assert diff == HTC_PARAMS[semantic] - MASK_RCNN_PARAMS, htc


# ----------------------------------------------------------------------------------------------------------------
# training flow: stage thresholds and interleaved re-sampling
# ----------------------------------------------------------------------------------------------------------------
def _box_with_iou(gt: torch.Tensor, iou: float) -> torch.Tensor:
    """A box sharing x1, y1, y2 with ``gt`` and a width giving exactly ``iou`` (shorter box inside the GT)."""
    x1, y1, x2, y2 = gt.tolist()
    return torch.tensor([x1, y1, x1 + iou * (x2 - x1), y2])


def test_stage_iou_thresholds():
    heads = _small_heads()
    gt = torch.tensor([10.0, 10.0, 110.0, 60.0])
    props = torch.stack([_box_with_iou(gt, v) for v in (0.55, 0.65, 0.75)] + [torch.tensor([150.0, 5, 190, 40])])
    target = {"boxes": gt[None], "labels": torch.tensor([2])}
    torch.manual_seed(0)
    expected_pos = {0: 4, 1: 3, 2: 2}  # GT + proposals with IoU ≥ 0.5 / 0.6 / 0.7
    for stage, npos in expected_pos.items():
        boxes, matched, labels, reg, is_gt = [x[0] for x in heads.sample(stage, [props], [target])]
        assert int((matched >= 0).sum()) == npos and int((labels == 2).sum()) == npos
        assert int(is_gt.sum()) == 1 and bool(is_gt[0]) and torch.equal(boxes[0], gt)
        # regression targets use the stage's coder (weights 1/std)
        pos = matched >= 0
        ref = BoxCoder(heads.htc.stage_bbox_weights(stage)).encode_single(gt.expand(npos, 4), boxes[pos])
        torch.testing.assert_close(reg[pos], ref)


def test_cascade_resamples_between_stages():
    torch.manual_seed(0)
    heads = _small_heads(rois=16).train()
    with torch.no_grad():  # every stage shifts boxes by a known class-agnostic delta
        for b in heads.bbox_head:
            b.bbox_pred.weight.zero_()
            b.bbox_pred.bias.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0]))
    feats = _feats()
    gts = torch.tensor([[10.0, 10.0, 90.0, 70.0], [100.0, 40.0, 180.0, 120.0]])
    targets = [{"boxes": gts, "labels": torch.tensor([0, 2]), "masks": torch.zeros(2, 128, 192, dtype=torch.uint8)}]
    targets[0]["masks"][0, 10:70, 10:90] = 1
    targets[0]["masks"][1, 40:120, 100:180] = 1
    g = torch.Generator().manual_seed(0)
    jitter = torch.randn(40, 4, generator=g) * 6
    proposals = [torch.cat([gts.repeat(20, 1) + jitter]).clamp(0, 127)]
    calls, mask_calls = [], []
    orig_sample, orig_train = heads.sample, heads.mask_branch.forward_train

    def sample(stage, props, tgts):
        out = orig_sample(stage, props, tgts)
        calls.append((stage, [p.clone() for p in props], [x[0].clone() for x in out]))
        return out

    def mask_train(rois, stage=None):
        mask_calls.append((stage, rois.boxes[0].clone(), rois.matched_idxs[0].clone()))
        return orig_train(rois, stage=stage)

    heads.sample, heads.mask_branch.forward_train = sample, mask_train
    _, losses = heads(feats, proposals, [(128, 192)], targets)
    assert set(losses) == {f"s{t}.{k}" for t in range(3) for k in ("loss_cls", "loss_bbox", "loss_mask")}
    # per stage: sample the stage's proposals, then (interleaved) re-sample the regressed RoIs for the mask
    assert [c[0] for c in calls] == [0, 0, 1, 1, 2, 2] and [m[0] for m in mask_calls] == [0, 1, 2]
    assert torch.equal(calls[0][1][0], proposals[0])
    for t in range(3):
        box_sampling, mask_sampling = calls[2 * t], calls[2 * t + 1]
        boxes, matched, _, _, is_gt = box_sampling[2]
        regressed = BoxCoder(heads.htc.stage_bbox_weights(t)).decode_single(
            torch.tensor([[0.5, 0.0, 0.0, 0.0]]).expand(len(boxes), 4), boxes)
        regressed[:, 0::2] = regressed[:, 0::2].clamp(0, 192)
        regressed[:, 1::2] = regressed[:, 1::2].clamp(0, 128)
        expected_next = regressed[~is_gt]  # GT rows dropped (mmdet refine_bboxes with pos_is_gt)
        torch.testing.assert_close(mask_sampling[1][0], expected_next)
        # the mask branch gets the positives of the re-sampling, at stage t's IoU
        m_boxes, m_matched = mask_sampling[2][0], mask_sampling[2][1]
        torch.testing.assert_close(mask_calls[t][1], m_boxes[m_matched >= 0])
        if t < 2:  # the next stage starts from the same regressed RoIs
            torch.testing.assert_close(calls[2 * t + 2][1][0], expected_next)
    sum(losses.values()).backward()
    for t in range(3):
        assert heads.bbox_head[t].fc6.weight.grad.abs().sum() > 0
        assert heads.mask_branch.mask_head[t].conv_logits.weight.grad.abs().sum() > 0
    for t in (1, 2):
        assert heads.mask_branch.mask_head[t].conv_res.weight.grad.abs().sum() > 0


def test_mask_information_flow_chain():
    torch.manual_seed(0)
    branch = _small_heads().mask_branch
    x = torch.randn(2, 256, 14, 14)
    logits = branch.stage_logits(x, 2)
    assert logits.shape == (2, 3, 28, 28)
    logits.sum().backward()
    heads = branch.mask_head
    # head 2's loss reaches the convs of heads 0 and 1 and their conv_res (the feature chain h_0 → h_1 → head 2) ...
    for h in heads:
        assert h.convs[0].weight.grad.abs().sum() > 0
    assert heads[1].conv_res.weight.grad.abs().sum() > 0 and heads[2].conv_res.weight.grad.abs().sum() > 0
    # ... but not the earlier heads' logit layers (mmdet runs them with return_logits=False)
    assert heads[0].conv_logits.weight.grad is None and heads[1].upsample.weight.grad is None
    # the chain by hand: h0 = convs0(x); h1 = convs1(x + relu(conv_res1(h0)));
    # logits from convs2(x + relu(conv_res2(h1)))
    with torch.no_grad():
        h0 = heads[0](x, return_logits=False)
        h1 = heads[1](x, h0, return_logits=False)
        torch.testing.assert_close(branch.stage_logits(x, 2), heads[2](x, h1, return_feat=False))
        logits_all = branch.all_stage_logits(x)
        torch.testing.assert_close(logits_all[2], heads[2](x, h1, return_feat=False))
        torch.testing.assert_close(logits_all[0], heads[0](x, return_feat=False))


# ----------------------------------------------------------------------------------------------------------------
# inference: averaged stage logits and mask probabilities
# ----------------------------------------------------------------------------------------------------------------
class _StubBox(nn.Module):
    def __init__(self, logits: list[float], delta: list[float]) -> None:
        super().__init__()
        self.logits, self.delta = torch.tensor(logits), torch.tensor(delta)

    def forward(self, x):
        n = x.shape[0]
        return self.logits.expand(n, -1), self.delta.expand(n, 4)


class _StubMask(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.res_seen = []

    def forward(self, x, res_feat=None, return_logits=True, return_feat=True):
        self.res_seen.append(None if res_feat is None else float(res_feat.mean()))
        logits = torch.full((x.shape[0], 3, 28, 28), self.value)
        feat = torch.full_like(x, self.value)
        outs = ([logits] if return_logits else []) + ([feat] if return_feat else [])
        return tuple(outs) if len(outs) > 1 else outs[0]


def test_inference_averages_stage_scores_and_mask_probabilities():
    heads = _small_heads().eval()
    stage_logits = [[2.0, 0.0, -1.0, 0.5], [-1.0, 3.0, 0.0, 0.0], [0.5, 0.5, 4.0, -2.0]]  # 3 classes + bg (last)
    deltas = [[0.5, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.3, 0.0]]
    heads.bbox_head = nn.ModuleList(_StubBox(l, d) for l, d in zip(stage_logits, deltas))
    heads.mask_branch.mask_head = nn.ModuleList(_StubMask(v) for v in (-2.0, 1.0, 3.0))
    props = torch.tensor([[20.0, 20.0, 80.0, 70.0], [100.0, 30.0, 150.0, 100.0]])
    (det,), _ = heads(_feats(), [props], [(128, 192)])
    mean_probs = F.softmax(torch.tensor(stage_logits).mean(0), dim=0)[:3]  # softmax of the MEAN of raw logits
    mean_of_softmax = torch.stack([F.softmax(torch.tensor(l), 0) for l in stage_logits]).mean(0)[:3]
    assert not torch.allclose(mean_probs, mean_of_softmax)
    boxes = props
    for t, d in enumerate(deltas):  # stage t regresses stage t−1's boxes with its own coder
        boxes = BoxCoder(heads.htc.stage_bbox_weights(t)).decode_single(torch.tensor([d]).expand(2, 4), boxes)
    # both proposals give identical scores → NMS keeps one box per class only where they overlap (they do not)
    assert det["boxes"].shape[0] == 6
    torch.testing.assert_close(det["scores"], mean_probs.repeat_interleave(2).sort(descending=True).values)
    for b in det["boxes"]:
        assert torch.isclose(b[None], boxes, atol=1e-4).all(1).any()
    # masks: mean of σ(stage logits), NOT σ(mean logits); the chain passes each head's feature to the next
    expected = torch.sigmoid(torch.tensor([-2.0, 1.0, 3.0])).mean()
    torch.testing.assert_close(det["mask_probs"], torch.full((6, 28, 28), float(expected)))
    assert [h.res_seen for h in heads.mask_branch.mask_head] == [[None], [-2.0], [1.0]]


def test_training_with_an_image_without_gt():
    torch.manual_seed(0)
    heads = _small_heads("things", rois=8).train()
    gt = torch.tensor([[10.0, 10.0, 60.0, 50.0]])
    masks = torch.zeros(1, 128, 192, dtype=torch.uint8)
    masks[0, 10:50, 10:60] = 1
    targets = [{"boxes": gt, "labels": torch.tensor([1]), "masks": masks},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                "masks": torch.zeros(0, 128, 192, dtype=torch.uint8)}]
    props = [gt + 3.0, torch.tensor([[5.0, 5.0, 40.0, 40.0], [50.0, 60.0, 120.0, 100.0]])]
    _, losses = heads(_feats(2), props, [(128, 192), (100, 150)], targets)
    assert all(torch.isfinite(v) for v in losses.values()) and "loss_semantic_seg" in losses


def test_eval_without_proposals_and_with_fixed_dets():
    heads = _small_heads("things").eval()
    (det,), _ = heads(_feats(), [torch.zeros(0, 4)], [(128, 192)])
    assert det["boxes"].shape == (0, 4) and det["mask_probs"].shape == (0, 28, 28)
    heads.fixed_dets = 5  # benchmark hook (rmbench bench --fixed-dets): top-5 (box, class) pairs, no threshold/NMS
    (det,), _ = heads(_feats(), [torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 20.0, 150.0, 90.0]])], [(128, 192)])
    assert det["boxes"].shape == (5, 4) and det["mask_probs"].shape == (5, 28, 28)


# ----------------------------------------------------------------------------------------------------------------
# semantic branch without COCO-stuff, and with it
# ----------------------------------------------------------------------------------------------------------------
def test_thing_semantic_labels_paint_small_on_top_and_ignore_crowds():
    masks = torch.zeros(2, 8, 10, dtype=torch.uint8)
    masks[0, 1:7, 1:9] = 1  # large, class 4
    masks[1, 2:4, 2:4] = 1  # small, inside the large one, class 1
    crowd = torch.zeros(1, 8, 10, dtype=torch.uint8)
    crowd[0, 6:, 8:] = 1
    lab = thing_semantic_labels(masks, torch.tensor([4, 1]), crowd)
    assert lab.dtype == torch.int64 and lab[0, 0] == 0 and lab[5, 5] == 5 and lab[3, 3] == 2 and lab[7, 9] == 255
    assert lab[6, 8] == 255
    # order of the instances does not matter: the smaller one still wins
    assert torch.equal(thing_semantic_labels(masks.flip(0), torch.tensor([1, 4]), crowd), lab)
    # targets at stride 8 (nearest: top-left pixel of each 8×8 block); batch padding is ignored
    big = torch.zeros(1, 64, 96, dtype=torch.uint8)
    big[0, 8:40, 16:48] = 1
    t = [{"masks": big, "labels": torch.tensor([6])}]
    out = semantic_targets(t, [(48, 80)], (64, 96), (8, 12), "things")
    assert out.shape == (1, 8, 12)
    assert out[0, 1, 2] == 7 and out[0, 0, 0] == 0 and out[0, 5, 2] == 0 and (out[0, 6:] == 255).all()
    assert (out[0, :, 10:] == 255).all() and out[0, 4, 5] == 7
    # optional crowd masks (given at the resized image size here) become 255
    crowd = torch.zeros(1, 48, 80, dtype=torch.uint8)
    crowd[0, :16, :16] = 1
    out = semantic_targets([{**t[0], "crowd_masks": crowd}], [(48, 80)], (64, 96), (8, 12), "things")
    assert (out[0, :2, :2] == 255).all() and out[0, 2, 2] == 7


def test_stuff_maps_option_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("RMBENCH_COCO_STUFF", raising=False)
    heads = _small_heads("stuff").train()
    assert heads.semantic_head.conv_logits.out_channels == 183
    feats = _feats()
    gt = torch.tensor([[10.0, 10.0, 90.0, 70.0]])
    target = {"boxes": gt, "labels": torch.tensor([0]), "masks": torch.zeros(1, 128, 192, dtype=torch.uint8)}
    with pytest.raises(ValueError, match="stuff_root"):
        heads(feats, [gt + 1], [(120, 180)], [target])
    # a user-provided stuff map (at the original resolution: resized with nearest, padded with 255)
    seg = torch.full((60, 90), 150, dtype=torch.uint8)
    seg[:, 45:] = 100
    losses = heads(feats, [gt + 1], [(120, 180)], [{**target, "semantic_seg": seg}])[1]
    assert torch.isfinite(losses["loss_semantic_seg"]) and losses["loss_semantic_seg"] > 0
    lab = semantic_targets([{"semantic_seg": seg}], [(120, 180)], (128, 192), (16, 24), "stuff")
    assert lab[0, 0, 0] == 150 and lab[0, 0, 12] == 100 and (lab[0, 15] == 255).all() and (lab[0, :, 23] == 255).all()
    # files: the PNG reader, and clear errors when the folder or a file is missing
    from PIL import Image

    Image.fromarray(np.full((5, 7), 42, dtype=np.uint8)).save(tmp_path / "000000000001.png")
    m = load_stuff_map(tmp_path, "000000000001.jpg")
    assert m.shape == (5, 7) and m.dtype == torch.uint8 and int(m[0, 0]) == 42
    with pytest.raises(FileNotFoundError, match="stuff_root"):
        load_stuff_map(tmp_path, "000000000002.jpg")
    with pytest.raises(FileNotFoundError, match="RMBENCH_COCO_STUFF"):
        check_stuff_maps(HTCConfig())
    assert check_stuff_maps(HTCConfig(stuff_root=str(tmp_path))) == tmp_path
    monkeypatch.setenv("RMBENCH_COCO_STUFF", str(tmp_path))
    assert check_stuff_maps(HTCConfig()) == tmp_path
    bad = dataclasses.replace(get_preset("htc_r50_fpn_1x_coco"),
                              mask_head_cfg=HTCConfig(stuff_root=str(tmp_path / "missing")))
    with pytest.raises(FileNotFoundError, match="stuff_root"):
        build_htc_roi_heads(bad)


# ----------------------------------------------------------------------------------------------------------------
# mmdet name mapping
# ----------------------------------------------------------------------------------------------------------------
def _mmdet_htc_head_keys(with_semantic: bool, sem_classes: int = 183) -> dict[str, tuple]:
    keys: dict[str, tuple] = {}
    for t in range(3):
        b = f"roi_head.bbox_head.{t}."
        keys.update({b + "shared_fcs.0.weight": (1024, 12544), b + "shared_fcs.0.bias": (1024,),
                     b + "shared_fcs.1.weight": (1024, 1024), b + "shared_fcs.1.bias": (1024,),
                     b + "fc_cls.weight": (81, 1024), b + "fc_cls.bias": (81,),
                     b + "fc_reg.weight": (4, 1024), b + "fc_reg.bias": (4,)})
        m = f"roi_head.mask_head.{t}."
        for k in range(4):
            keys.update({m + f"convs.{k}.conv.weight": (256, 256, 3, 3), m + f"convs.{k}.conv.bias": (256,)})
        keys.update({m + "upsample.weight": (256, 256, 2, 2), m + "upsample.bias": (256,),
                     m + "conv_logits.weight": (80, 256, 1, 1), m + "conv_logits.bias": (80,)})
        if t > 0:
            keys.update({m + "conv_res.conv.weight": (256, 256, 1, 1), m + "conv_res.conv.bias": (256,)})
    if with_semantic:
        s = "roi_head.semantic_head."
        for i in range(5):
            keys.update({s + f"lateral_convs.{i}.conv.weight": (256, 256, 1, 1),
                         s + f"lateral_convs.{i}.conv.bias": (256,)})
        for i in range(4):
            keys.update({s + f"convs.{i}.conv.weight": (256, 256, 3, 3), s + f"convs.{i}.conv.bias": (256,)})
        keys.update({s + "conv_embedding.conv.weight": (256, 256, 1, 1), s + "conv_embedding.conv.bias": (256,),
                     s + "conv_logits.weight": (sem_classes, 256, 1, 1), s + "conv_logits.bias": (sem_classes,)})
    return keys


@pytest.mark.parametrize("semantic", ["stuff", "none"])
def test_mmdet_htc_names_cover_the_heads(semantic):
    with torch.device("meta"):
        heads = _small_heads(semantic, num_classes=80)
    ours = {f"roi_heads.{k}": tuple(v.shape) for k, v in heads.state_dict().items()}
    fake = {k: torch.zeros(s, device="meta") for k, s in _mmdet_htc_head_keys(semantic == "stuff").items()}
    converted = convert_mmdet_htc(fake, trunk_mapper=False)
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    assert map_mmdet_htc_key("roi_head.bbox_head.fc_cls.weight") is None  # a standard (non-cascade) head
    with pytest.raises(ValueError, match="roi_head.mask_head.0.bogus"):
        convert_mmdet_htc({**fake, "roi_head.mask_head.0.bogus.weight": torch.zeros(1)}, trunk_mapper=False)
    if semantic == "none":  # the default trunk mapper (refinemask.convert) gets the rest, not the cascade heads
        import refinemask.convert  # noqa: F401  (an in-tree module: a broken import must fail, not skip)
        out = convert_mmdet_htc({**fake, "neck.fpn_convs.0.conv.weight": torch.zeros(1)})
        assert "backbone.fpn.layer_blocks.0.0.weight" in out and "roi_heads.bbox_head.2.fc6.weight" in out


# ----------------------------------------------------------------------------------------------------------------
# full models on a real image
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["htc_thing_semantic_r50_fpn_1x_coco", "htc_without_semantic_r50_fpn_1x_coco"])
def test_full_model_train_and_eval_on_real_image(preset):
    img, target = load_real_sample()
    torch.manual_seed(0)
    model = shrink_for_cpu(build_model(preset), rois=8).train()  # ≤ 2 positives per stage: the mask chain is costly
    losses = model([img], [target])
    stages = {f"s{t}.{k}" for t in range(3) for k in ("loss_cls", "loss_bbox", "loss_mask")}
    semantic = {"loss_semantic_seg"} if "thing" in preset else set()
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"} | stages | semantic
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    rh = model.roi_heads
    params = [model.backbone.body.layer4[0].conv1.weight]
    for t in range(3):
        params += [rh.bbox_head[t].fc6.weight, rh.bbox_head[t].cls_score.weight, rh.bbox_head[t].bbox_pred.weight,
                   rh.mask_branch.mask_head[t].convs[0].weight, rh.mask_branch.mask_head[t].conv_logits.weight]
    params += [rh.mask_branch.mask_head[t].conv_res.weight for t in (1, 2)]
    if rh.semantic_head is not None:
        params += [rh.semantic_head.conv_logits.weight, rh.semantic_head.conv_embedding.weight,
                   rh.semantic_head.lateral_convs[4].weight]
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        (out,) = model([img])
    check_detections(out, *img.shape[-2:], max_dets=4)
