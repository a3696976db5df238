"""torchvision ``maskrcnn_resnet50_fpn`` → ``rmbench convert`` → our ``mask_rcnn_r50_fpn_torchvision_coco``: parity.

torchvision's model is built as ``maskrcnn_resnet50_fpn`` builds it for released weights (FrozenBN ResNet-50, FPN
with max-pool P6, 91 classes), randomly initialised with a seed; its FrozenBN statistics are randomised (identity
statistics would hide a mis-mapped BN), and, identically in both models through the conversion, the RPN objectness
and the box classifier weights are scaled up so that scores spread out and pass the 0.05 threshold. Both models see
the same uint8 image (torchvision gets it / 255, its input convention) at a reduced test scale for CPU time.
Measured: boxes, scores, labels (ours + 1) and masks are bit-identical — the conventions reproduce torchvision's
pipeline operation for operation (same library calls in the same order).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torchvision.io import read_image
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from eval.errors import UsageError
from refinemask.cli import main
from refinemask.convert_torchvision import convert_torchvision_mask_rcnn
from refinemask.engine.checkpoint import load_checkpoint, load_model_state
from refinemask.models import build_model
from refinemask.registry import get_preset

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ["000000000139.jpg", "000000000802.jpg"]
SCALE = (533, 320)  # (long, short): torchvision max_size / min_size


def _torchvision_model(seed: int = 0) -> MaskRCNN:
    torch.manual_seed(seed)
    tv = MaskRCNN(_resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3), num_classes=91,
                  min_size=SCALE[1], max_size=SCALE[0]).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, buf in tv.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("weight"):
                buf.copy_(torch.rand(buf.shape, generator=g) * 0.5 + 0.5)
            elif name.endswith("bias"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
        tv.rpn.head.cls_logits.weight.mul_(30)
        tv.roi_heads.box_predictor.cls_score.weight.mul_(300)
    return tv


@pytest.fixture(scope="module")
def tv_model():
    return _torchvision_model()


@pytest.fixture(scope="module")
def converted(tv_model, tmp_path_factory):
    """Through the command line: torchvision's state_dict() file → rmbench convert → our checkpoint."""
    d = tmp_path_factory.mktemp("tv")
    src, out = d / "maskrcnn_tv.pth", d / "ours.pth"
    torch.save(tv_model.state_dict(), src)
    assert main(["convert", "--from", "torchvision", "--preset", "mask_rcnn_r50_fpn_torchvision_coco",
                 str(src), str(out)]) == 0
    return out


def test_convert_writes_weights_only_checkpoint(converted):
    ckpt = torch.load(converted, map_location="cpu", weights_only=True)
    assert ckpt["preset"] == "mask_rcnn_r50_fpn_torchvision_coco"
    assert ckpt["converted_from"]["framework"] == "torchvision"
    assert len(ckpt["converted_from"]["sha256"]) == 64
    sd = ckpt["model"]
    assert sd["roi_heads.box_head.cls_score.weight"].shape == (91, 1024)  # 90 labels + background last
    assert sd["roi_heads.box_head.bbox_pred.weight"].shape == (360, 1024)
    assert sd["roi_heads.mask_branch.predictor.weight"].shape == (90, 256, 1, 1)


def test_end_to_end_parity_with_torchvision(tv_model, converted):
    preset = dataclasses.replace(get_preset("mask_rcnn_r50_fpn_torchvision_coco"), test_scale=SCALE)
    ours = build_model(preset).eval()
    load_model_state(ours, load_checkpoint(converted)["model"], converted)
    labels_seen = set()
    for name in IMAGES:
        img = read_image(str(ROOT / "data/coco_mini/val2017" / name))
        with torch.no_grad():
            a = tv_model([img.float() / 255])[0]
            b = ours([img])[0]
        assert len(a["boxes"]) == len(b["boxes"]) > 20
        torch.testing.assert_close(b["boxes"], a["boxes"], rtol=0, atol=0)
        torch.testing.assert_close(b["scores"], a["scores"], rtol=0, atol=1e-7)
        assert torch.equal(b["labels"] + 1, a["labels"])
        assert torch.equal(b["masks"], a["masks"][:, 0] > 0.5)
        assert int(b["masks"].sum()) > 0
        labels_seen |= set(b["labels"].tolist())
    assert len(labels_seen) > 5  # the comparison covers many classifier rows, not one


def test_class_layout_background_moves_last():
    k1 = 5
    sd = {"roi_heads.box_predictor.cls_score.weight": torch.arange(k1, dtype=torch.float32)[:, None].repeat(1, 3),
          "roi_heads.box_predictor.cls_score.bias": torch.arange(k1, dtype=torch.float32),
          "roi_heads.box_predictor.bbox_pred.weight": torch.arange(4 * k1, dtype=torch.float32)[:, None],
          "roi_heads.box_predictor.bbox_pred.bias": torch.arange(4 * k1, dtype=torch.float32),
          "roi_heads.mask_predictor.mask_fcn_logits.weight": torch.arange(k1, dtype=torch.float32)[:, None, None, None],
          "roi_heads.mask_predictor.mask_fcn_logits.bias": torch.arange(k1, dtype=torch.float32)}
    out = convert_torchvision_mask_rcnn(sd)
    assert out["roi_heads.box_head.cls_score.bias"].tolist() == [1, 2, 3, 4, 0]
    assert out["roi_heads.box_head.bbox_pred.bias"].tolist() == list(range(4, 20))
    assert out["roi_heads.mask_branch.predictor.bias"].tolist() == [1, 2, 3, 4]


def test_old_torchvision_names_are_mapped():
    w = torch.zeros(1)
    out = convert_torchvision_mask_rcnn({"rpn.head.conv.weight": w, "roi_heads.mask_head.mask_fcn3.bias": w,
                                         "backbone.fpn.inner_blocks.2.weight": w})
    assert set(out) == {"rpn.head.conv.weight", "roi_heads.mask_branch.convs.4.bias",
                        "backbone.fpn.inner_blocks.2.0.weight"}


def test_unmapped_and_misshaped_keys_are_listed():
    w = torch.zeros(1)
    with pytest.raises(UsageError, match=r"2 key\(s\) have no mapping.*roi_heads\.box_head\.0\.0\.weight"):
        convert_torchvision_mask_rcnn({"roi_heads.box_head.0.0.weight": w,  # maskrcnn_resnet50_fpn_v2
                                       "roi_heads.box_head.0.1.weight": w, "rpn.head.conv.0.0.weight": w})
    bad = {"roi_heads.box_predictor.cls_score.weight": torch.zeros(91, 2),
           "roi_heads.box_predictor.bbox_pred.weight": torch.zeros(4, 2)}  # class-agnostic regression
    with pytest.raises(UsageError, match="bbox_pred needs 364"):
        convert_torchvision_mask_rcnn(bad)


def test_convert_refuses_a_preset_the_weights_do_not_fit(tv_model, tmp_path, capsys):
    src = tmp_path / "tv.pth"
    torch.save(tv_model.state_dict(), src)
    out = tmp_path / "x.pth"
    assert main(["convert", "--from", "torchvision", "--preset", "mask_rcnn_r50_fpn_1x_coco", str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert "roi_heads.box_head.cls_score.weight: checkpoint (91, 1024) vs model (81, 1024)" in err
    assert not out.exists()
    assert main(["convert", "--from", "torchvision", "--preset", "htc_r50_fpn_1x_coco", str(src), str(out)]) == 2
    assert "no torchvision converter for preset 'htc_r50_fpn_1x_coco'" in capsys.readouterr().err
    assert main(["convert", "--from", "torchvision", "--preset", "mask_rcnn_r50_fpn_torchvision_coco", str(src),
                 str(src)]) == 2
    assert "refusing to overwrite the source" in capsys.readouterr().err
