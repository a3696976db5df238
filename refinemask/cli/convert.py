"""``rmbench convert``: a checkpoint trained elsewhere → our weights-only checkpoint for one preset.

Sources (``--from``) and the models each one covers (the preset's mask branch picks the converter):

=======================  ==========================================  =========================================
``--from``               reader                                      branches (presets)
=======================  ==========================================  =========================================
``torchvision``          ``torch.load(weights_only=True)``           FCN (mask_rcnn_r50_fpn_torchvision_coco)
``detectron2``           restricted unpickler (numpy only) / .pth    FCN (*_detectron2_coco), PointRend
``mmdet``                ``torch.load(weights_only=True)``           FCN, RefineMask, PointRend, HTC
``refinemask-official``  same (zhanggang001/RefineMask files)        RefineMask
=======================  ==========================================  =========================================

Every key is mapped or the command fails listing the unmapped ones; the converted weights are then loaded strictly
into a model built from ``--preset`` (missing, unexpected and mis-shaped keys are listed); only
``num_batches_tracked`` counters may be absent (they are not weights). The output (written atomically) is a
:data:`~refinemask.engine.checkpoint.CHECKPOINT_FORMAT` dict — ``model`` (our ``state_dict()``), ``preset``,
``converted_from`` (framework, file, sha256, the file's plain meta values) — that ``rmbench infer --checkpoint``
and ``torch.load(weights_only=True)`` read.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from eval.errors import UsageError

from .command import Command

log = logging.getLogger("rmbench")

__all__ = ["COMMAND", "SOURCES", "convert_checkpoint"]

SOURCES = ("torchvision", "detectron2", "mmdet", "refinemask-official")

# (source, mask-branch kind) → the converter's name, for messages
_SUPPORTED = {
    ("torchvision", "fcn"): "refinemask.convert_torchvision.convert_torchvision_mask_rcnn",
    ("detectron2", "fcn"): "refinemask.convert_detectron2.convert_detectron2_mask_rcnn",
    ("detectron2", "point_rend"): "baselines.convert.convert_detectron2_point_rend",
    ("mmdet", "fcn"): "refinemask.convert_mmdet.convert_mmdet_mask_rcnn",
    ("mmdet", "refinemask"): "refinemask.convert.convert_official_refinemask",
    ("mmdet", "point_rend"): "baselines.convert.convert_mmdet_point_rend",
    ("mmdet", "htc"): "baselines.convert.convert_mmdet_htc",
    ("refinemask-official", "refinemask"): "refinemask.convert.convert_official_refinemask",
}


def _check_pixel_stats(info: dict, preset, path: Path) -> None:
    """detectron2 files may carry ``pixel_mean`` / ``pixel_std``: they must be the preset's normalisation."""
    from refinemask.detection import PIXEL_STATS

    if "pixel_mean" not in info and "pixel_std" not in info:
        return
    mean, std, order = PIXEL_STATS[preset.backbone_style]
    got_mean, got_std = info.get("pixel_mean", list(mean)), info.get("pixel_std", list(std))
    ok = (len(got_mean) == 3 and len(got_std) == 3 and all(abs(a - b) < 1e-3 for a, b in zip(got_mean, mean))
          and all(abs(a - b) < 1e-3 for a, b in zip(got_std, std)))
    if not ok:
        raise UsageError(f"{path}: the checkpoint normalises inputs with pixel_mean {got_mean} / pixel_std {got_std}, "
                         f"but preset {preset.name!r} uses {list(mean)} / {list(std)} ({order.upper()}, "
                         f"{preset.backbone_style} style). Fix: pick a preset of the checkpoint's backbone style "
                         f"(detectron2's MSRA models: the *_detectron2_coco presets)")


def convert_checkpoint(source: str, preset_name: str, path: str | Path) -> tuple[dict, dict]:
    """Read and convert ``path`` for ``preset_name``; returns (our model ``state_dict()``, report).

    The report holds ``converter``, ``meta`` (the file's plain meta values), ``dropped`` (keys deliberately not
    loaded: derived buffers, counters) and ``tensors`` (how many were loaded).

    Raises:
        UsageError / MissingFileError / CheckpointError: unknown source, a source that has no converter for the
        preset's mask branch (the supported pairs are listed), an unsafe or corrupt file, unmapped keys, or keys
        that do not fit the preset's model (listed).
    """
    import torch

    from refinemask.engine.checkpoint import load_checkpoint, load_model_state
    from refinemask.models import build_model
    from refinemask.registry import get_preset

    if source not in SOURCES:
        raise UsageError(f"unknown --from {source!r}; choose one of {', '.join(SOURCES)}")
    preset = get_preset(preset_name)
    kind = preset.mask_head
    key = (source, kind)
    if key not in _SUPPORTED:
        pairs = ", ".join(f"{s} → {k}" for s, k in _SUPPORTED)
        raise UsageError(f"no {source} converter for preset {preset.name!r} ({preset.method}, mask branch {kind!r}). "
                         f"Supported (source → branch): {pairs}")
    path = Path(path)
    meta: dict = {}
    info: dict = {}
    if source == "torchvision":
        from refinemask.convert_torchvision import convert_torchvision_mask_rcnn

        state = convert_torchvision_mask_rcnn(load_checkpoint(path)["model"])
    elif source == "detectron2":
        from refinemask.convert_detectron2 import convert_detectron2_mask_rcnn, read_detectron2_checkpoint

        raw, meta = read_detectron2_checkpoint(path)
        if kind == "point_rend":
            from baselines.convert import convert_detectron2_point_rend

            state, info = convert_detectron2_point_rend(raw)
        else:
            state, info = convert_detectron2_mask_rcnn(raw)
        _check_pixel_stats(info, preset, path)
    else:
        from refinemask.convert import convert_official_refinemask, read_mmdet_checkpoint

        raw, meta = read_mmdet_checkpoint(path)
        if kind == "refinemask":
            state = convert_official_refinemask(raw)
        elif kind == "fcn":
            from refinemask.convert_mmdet import convert_mmdet_mask_rcnn

            state = dict(convert_mmdet_mask_rcnn(raw))
        elif kind == "point_rend":
            from baselines.convert import convert_mmdet_point_rend

            state = convert_mmdet_point_rend(raw)
        else:
            from baselines.convert import convert_mmdet_htc

            state = convert_mmdet_htc(raw)
    model = build_model(preset)
    own = model.state_dict()
    dropped = sorted(k for k in state if k.endswith("num_batches_tracked") and k not in own)
    for k in dropped:
        del state[k]
    for k, v in own.items():  # counters, not weights: absent from FrozenBN sources
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)
    load_model_state(model, state, path, strict=True)
    report = {"converter": _SUPPORTED[key], "meta": _plain(meta), "dropped": dropped + info.get("dropped", []),
              "tensors": len(own)}
    return model.state_dict(), report


def _plain(meta) -> dict:
    """The plain (str/number/bool/None, lists of them) values of a checkpoint's meta dict."""
    out = {}
    for k, v in (meta or {}).items():
        if isinstance(v, (str, int, float, bool, type(None))):
            out[str(k)] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[str(k)] = list(v)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the framework that wrote IN")
    p.add_argument("--preset", required=True, help="the preset whose model the weights are for (rmbench models)")
    p.add_argument("input", type=Path, metavar="IN", help="the source checkpoint (.pth / .pkl), a LOCAL file")
    p.add_argument("output", type=Path, metavar="OUT", help="our checkpoint to write (.pth, weights_only)")


def run(args) -> int:
    from eval.io import sha256_file
    from refinemask.engine.checkpoint import CHECKPOINT_FORMAT, atomic_torch_save

    src, out = Path(args.input), Path(args.output)
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise UsageError(f"OUT {out} is IN: refusing to overwrite the source. Fix: name another output file")
    if out.is_dir():
        raise UsageError(f"OUT {out} is a folder. Fix: name the .pth file to write")
    if not out.parent.is_dir():
        raise UsageError(f"the folder of OUT {out} does not exist. Fix: create {out.parent} first")
    state, report = convert_checkpoint(args.source, args.preset, src)
    ckpt = {"format": CHECKPOINT_FORMAT, "model": state, "preset": args.preset,
            "converted_from": {"framework": args.source, "file": str(src), "sha256": sha256_file(src), **report}}
    atomic_torch_save(ckpt, out)
    print(f"wrote {out}: {report['tensors']} tensors for preset {args.preset} from {args.source} ({src}) via "
          f"{report['converter']}" + (f"; dropped {len(report['dropped'])}: {report['dropped'][:5]}"
                                      if report["dropped"] else ""))
    return 0


COMMAND = Command(
    "convert", "convert a torchvision / detectron2 / mmdet / official RefineMask checkpoint for a preset",
    "Map every key of a checkpoint written by another framework to our names (or fail listing the unmapped ones), "
    "load it strictly into the preset's model (missing / unexpected / mis-shaped keys listed) and write a "
    "weights_only checkpoint that `rmbench infer --checkpoint` reads. detectron2 .pkl files are read with a "
    "restricted unpickler that admits numpy arrays and plain containers only.", add_arguments, run,
    epilog="presets that reproduce a source's settings: mask_rcnn_r50_fpn_torchvision_coco (torchvision), "
           "mask_rcnn_{r50,r101}_fpn_3x_detectron2_coco and point_rend_r50_fpn_1x_detectron2_coco (detectron2); "
           "mmdet / official RefineMask checkpoints fit the paper presets.")
