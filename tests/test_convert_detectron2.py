"""detectron2 model-zoo checkpoints → ``rmbench convert --from detectron2`` (refinemask/convert_detectron2.py).

detectron2 cannot be installed here, so the files are built in the test with detectron2's names and shapes: every
tensor of a randomly initialised model of ours is renamed to detectron2's module path (written out below from
detectron2's module structure — ``ResNet``/``BasicStem``/``BottleneckBlock``, ``FPN``, ``StandardRPNHead``,
``FastRCNNConvFCHead``, ``FastRCNNOutputLayers``, ``MaskRCNNConvUpsampleHead``, PointRend's ``CoarseMaskHead`` /
``StandardPointHead``), stored as numpy arrays and pickled like the model zoo (protocol 2, ``{"model": ...,
"__author__": ..., "matching_heuristics": True}``, ``pixel_mean`` / ``pixel_std`` included). Converting the file
back must give exactly the original tensors.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.errors import UsageError
from refinemask.cli import main
from refinemask.convert_detectron2 import convert_detectron2_mask_rcnn, read_detectron2_checkpoint
from refinemask.models import build_model

MSRA_MEAN, MSRA_STD = [103.53, 116.28, 123.675], [1.0, 1.0, 1.0]


def _d2_name(ours: str, point_rend_prefix: str = "mask_coarse_head") -> str | None:
    """Our key → detectron2's (None for keys detectron2 does not save)."""
    if ours.endswith("num_batches_tracked"):
        return None
    parts = ours.split(".")
    if ours.startswith("backbone.body."):
        rest = parts[2:]
        if rest[0] == "conv1":
            return "backbone.bottom_up.stem.conv1.weight"
        if rest[0] == "bn1":
            return f"backbone.bottom_up.stem.conv1.norm.{rest[1]}"
        stage = f"res{int(rest[0][-1]) + 1}"
        block, layer, leaf = rest[1], rest[2], rest[-1]
        if layer == "downsample":
            return f"backbone.bottom_up.{stage}.{block}.shortcut" + (".weight" if rest[3] == "0" else f".norm.{leaf}")
        if layer.startswith("conv"):
            return f"backbone.bottom_up.{stage}.{block}.{layer}.weight"
        return f"backbone.bottom_up.{stage}.{block}.conv{layer[-1]}.norm.{leaf}"
    if ours.startswith("backbone.fpn."):
        kind = {"inner_blocks": "fpn_lateral", "layer_blocks": "fpn_output"}[parts[2]]
        return f"backbone.{kind}{int(parts[3]) + 2}.{parts[-1]}"
    rpn = {"conv": "conv", "cls_logits": "objectness_logits", "bbox_pred": "anchor_deltas"}
    if ours.startswith("rpn.head."):
        return f"proposal_generator.rpn_head.{rpn[parts[2]]}.{parts[-1]}"
    box = {"fc6": "box_head.fc1", "fc7": "box_head.fc2", "cls_score": "box_predictor.cls_score",
           "bbox_pred": "box_predictor.bbox_pred"}
    if ours.startswith("roi_heads.box_head."):
        return f"roi_heads.{box[parts[2]]}.{parts[-1]}"
    mb = parts[2:]
    if mb[0] == "convs":
        return f"roi_heads.mask_head.mask_fcn{int(mb[1]) // 2 + 1}.{mb[-1]}"
    if mb[0] in ("deconv", "predictor"):
        return f"roi_heads.mask_head.{mb[0]}.{mb[-1]}"
    coarse = {"downsample_conv": "reduce_spatial_dim_conv", "fc_logits": "prediction"}
    point_prefix = "mask_point_head" if point_rend_prefix == "mask_coarse_head" else "mask_head.point_head"
    if mb[0] == "mask_head":
        name = f"coarse_mask_fc{int(mb[2]) + 1}" if mb[1] == "fcs" else coarse[mb[1]]
        return f"roi_heads.{point_rend_prefix}.{name}.{mb[-1]}"
    if mb[0] == "point_head":
        name = f"fc{int(mb[2]) + 1}" if mb[1] == "fcs" else "predictor"
        return f"roi_heads.{point_prefix}.{name}.{mb[-1]}"
    raise AssertionError(f"no detectron2 name for {ours}")


def _zoo_file(model, path: Path, **kw) -> dict[str, np.ndarray]:
    arrays = OrderedDict()
    for k, v in model.state_dict().items():
        name = _d2_name(k, **kw)
        if name is not None:
            arrays[name] = v.detach().numpy().copy()
    arrays["pixel_mean"] = np.array(MSRA_MEAN, dtype=np.float32).reshape(3, 1, 1)
    arrays["pixel_std"] = np.array(MSRA_STD, dtype=np.float32).reshape(3, 1, 1)
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f, protocol=2)
    return arrays


def _randomise(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.1)
    return model


@pytest.mark.parametrize("preset", ["mask_rcnn_r50_fpn_3x_detectron2_coco", "mask_rcnn_r101_fpn_3x_detectron2_coco"])
def test_mask_rcnn_zoo_file_round_trips(preset, tmp_path):
    model = _randomise(build_model(preset))
    src, out = tmp_path / "model_final.pkl", tmp_path / "ours.pth"
    arrays = _zoo_file(model, src)
    assert "backbone.bottom_up.res4.22.conv3.norm.running_var" in arrays or "r50" in preset  # R101: 23 res4 blocks
    assert main(["convert", "--from", "detectron2", "--preset", preset, str(src), str(out)]) == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    want = model.state_dict()
    assert set(ckpt["model"]) == set(want)
    for k, v in want.items():
        assert torch.equal(ckpt["model"][k], v), k
    assert ckpt["converted_from"]["meta"] == {"__author__": "Detectron2 Model Zoo", "matching_heuristics": True}


@pytest.mark.parametrize("prefix", ["mask_coarse_head", "mask_head.coarse_head"])
def test_point_rend_zoo_file_round_trips(prefix, tmp_path):
    preset = "point_rend_r50_fpn_1x_detectron2_coco"
    model = _randomise(build_model(preset))
    src, out = tmp_path / "pointrend.pkl", tmp_path / "ours.pth"
    arrays = _zoo_file(model, src, point_rend_prefix=prefix)
    assert any(k.startswith(f"roi_heads.{prefix}.coarse_mask_fc2") for k in arrays)
    assert main(["convert", "--from", "detectron2", "--preset", preset, str(src), str(out)]) == 0
    got = torch.load(out, map_location="cpu", weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(got[k], v), k


class _Payload:
    """A pickle that, when loaded by an ordinary unpickler, writes a file (stands in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_pickle_that_builds_an_object_is_refused(tmp_path, capsys):
    marker = tmp_path / "ran.txt"
    src = tmp_path / "evil.pkl"
    with open(src, "wb") as f:
        pickle.dump({"model": {"backbone.fpn_lateral2.weight": _Payload(marker)}}, f, protocol=2)
    with pytest.raises(UsageError, match=r"global '[\w.]+' is not allowed"):
        read_detectron2_checkpoint(src)
    assert main(["convert", "--from", "detectron2", "--preset", "mask_rcnn_r50_fpn_3x_detectron2_coco", str(src),
                 str(tmp_path / "out.pth")]) == 2
    assert "tries to build other objects" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.pth").exists()
    with open(src, "wb") as f:  # an object array smuggles objects too
        pickle.dump({"model": {"w": np.array([1, "x"], dtype=object)}}, f, protocol=2)
    with pytest.raises(UsageError, match="not allowed|not a numeric array"):
        read_detectron2_checkpoint(src)
    src.write_bytes(pickle.dumps({"model": {"w": np.zeros(3)}}, protocol=2)[:-7])  # truncated: corrupt, not unsafe
    with pytest.raises(UsageError, match="not a readable pickle.*re-download"):
        read_detectron2_checkpoint(src)


def test_unmapped_misshaped_and_wrong_normalisation_are_listed(tmp_path, capsys):
    preset = "mask_rcnn_r50_fpn_3x_detectron2_coco"
    model = build_model(preset)
    src = tmp_path / "m.pkl"
    arrays = _zoo_file(model, src)
    sd = {k: torch.from_numpy(v) for k, v in arrays.items()}
    with pytest.raises(UsageError, match=r"roi_heads\.keypoint_head\.conv_fcn1\.weight"):
        convert_detectron2_mask_rcnn({**sd, "roi_heads.keypoint_head.conv_fcn1.weight": torch.zeros(1)})
    with pytest.raises(UsageError, match=r"backbone\.bottom_up\.res2\.0\.conv2_offset\.weight"):  # DCN
        convert_detectron2_mask_rcnn({**sd, "backbone.bottom_up.res2.0.conv2_offset.weight": torch.zeros(1)})
    bad = dict(arrays)
    bad["roi_heads.box_predictor.cls_score.weight"] = np.zeros((91, 1024), np.float32)
    bad["roi_heads.box_predictor.cls_score.bias"] = np.zeros(91, np.float32)
    bad["roi_heads.box_predictor.bbox_pred.weight"] = np.zeros((360, 1024), np.float32)
    bad["roi_heads.box_predictor.bbox_pred.bias"] = np.zeros(360, np.float32)
    with open(src, "wb") as f:
        pickle.dump({"model": bad}, f, protocol=2)
    assert main(["convert", "--from", "detectron2", "--preset", preset, str(src), str(tmp_path / "o.pth")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"cls_score\.weight: checkpoint \(91, 1024\) vs model \(81, 1024\)", err)
    torchvision_style = dict(arrays, pixel_std=np.array([57.375, 57.12, 58.395], np.float32).reshape(3, 1, 1))
    with open(src, "wb") as f:
        pickle.dump({"model": torchvision_style}, f, protocol=2)
    assert main(["convert", "--from", "detectron2", "--preset", preset, str(src), str(tmp_path / "o.pth")]) == 2
    assert "pick a preset of the checkpoint's backbone style" in capsys.readouterr().err
    assert not (tmp_path / "o.pth").exists()
