"""Every mask branch runs its inference convs channels-last (``MaskBranch.channels_last``, default True): the same
detections and masks as the NCHW branch on a real bundled image, for each mask-head family; training stays NCHW."""

from __future__ import annotations

import copy

import pytest
import torch

from refinemask import build_model
from refinemask.engine.runners import set_fixed_dets
from tests.helpers import load_coco_sample

PRESETS = ["mask_rcnn_r50_fpn_1x_coco", "point_rend_r50_fpn_1x_coco", "htc_without_semantic_r50_fpn_1x_coco",
           "refinemask_r50_fpn_1x_coco"]


@pytest.fixture(scope="module")
def val_image():
    img, _ = load_coco_sample("val", 397133)
    return img


@pytest.mark.parametrize("preset", PRESETS)
def test_channels_last_mask_branch_gives_the_nchw_results(preset, val_image):
    torch.manual_seed(0)
    nhwc = build_model(preset).eval()
    branch = nhwc.roi_heads.mask_branch
    assert branch.channels_last
    x = torch.randn(2, 8, 5, 5)
    assert branch.inference_layout(x).is_contiguous(memory_format=torch.channels_last)
    assert branch.train().inference_layout(x) is x  # training keeps NCHW
    branch.eval()
    nhwc.transform.test_scale = (480, 288)  # small input: the branch sees the same 20 RoIs either way
    set_fixed_dets(nhwc, 20)
    nchw = copy.deepcopy(nhwc)
    nchw.roi_heads.mask_branch.channels_last = False
    layouts = {"nhwc": set(), "nchw": set()}
    for tag, model in (("nhwc", nhwc), ("nchw", nchw)):
        for m in model.roi_heads.mask_branch.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.register_forward_hook(lambda mod, args, out, tag=tag: layouts[tag].add(
                    "nhwc" if out.shape[1] > 1 and out.is_contiguous(memory_format=torch.channels_last) else
                    "nchw" if out.shape[1] > 1 else "1-channel"))
    with torch.no_grad():
        a, = nhwc([val_image])
        b, = nchw([val_image])
    assert layouts["nhwc"] - {"1-channel"} == {"nhwc"} and layouts["nchw"] - {"1-channel"} == {"nchw"}
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
    assert a["masks"].shape[0] == 20
    differ = (a["masks"] != b["masks"]).sum().item()
    assert differ == 0
