"""The models ``rmbench bench`` times, one :class:`~refinemask.engine.timing.Runner` factory per family.

- :func:`ours_runner`: a preset of this harness (random init seeded with :data:`SEED`, or a checkpoint).
- :func:`torchvision_runner`: torchvision's ``maskrcnn_resnet50_fpn(weights=None)``.
- :func:`mmdet_runner`: an mmdetection 3.x model from its bundled configs (``make mmdet``); ``--fixed-dets``
  patches mmdet's ``multiclass_nms`` inside :func:`mmdet_topk_nms`, a context manager that restores it.

``fixed_dets = N`` replaces score threshold and NMS by the top-N (proposal, class) pairs in every family, so randomly
initialised models send N boxes per image through the mask head and the paste.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import platform
from collections.abc import Iterator, Sequence
from pathlib import Path

from eval.errors import MissingFileError, UsageError

from .timing import Runner

log = logging.getLogger("rmbench.bench")

__all__ = ["SEED", "default_image_dir", "list_images", "load_images", "set_fixed_dets", "ours_runner",
           "torchvision_runner", "mmdet_config_path", "build_mmdet_model", "mmdet_topk_nms", "mmdet_runner",
           "device_name"]

#: seed for every randomly initialised model the benchmark builds (ours, torchvision, mmdet): with --fixed-dets the
#: boxes, hence RoIAlign sampling counts and paste areas, then repeat from run to run
SEED = 0


# -- data -----------------------------------------------------------------------------------------------
def default_image_dir() -> Path:
    from eval.paths import bundled

    return bundled("coco_mini", "val2017")


def list_images(image_dir: Path) -> list[Path]:
    """JPEG/PNG files of ``image_dir`` in the order of ``../annotations/instances_<split>.json`` when present
    (the protocol's annotation-file order), else sorted by name."""
    files = {p.name: p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    if not files:
        raise MissingFileError(f"no images (*.jpg, *.png) in {image_dir}")
    ann = image_dir.parent / "annotations" / f"instances_{image_dir.name}.json"
    order: list[Path] = []
    if ann.is_file():
        with open(ann) as f:
            names = [im["file_name"] for im in json.load(f).get("images", [])]
        order = [files.pop(n) for n in names if n in files]
    return order + [files[n] for n in sorted(files)]


def load_images(paths: Sequence[Path]):
    """Decode images to (3, H, W) uint8 RGB tensors (outside any timer)."""
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
        out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous())
    return out


# -- runners: one per model family -------------------------------------------------------------------------
def _count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def set_fixed_dets(model, n: int | None) -> None:
    """Set ``fixed_dets`` on the model's RoI heads (the hook every RoI-head class declares)."""
    rh = getattr(model, "roi_heads", None)
    if rh is None or not hasattr(rh, "fixed_dets"):
        raise UsageError(f"{type(rh).__name__ if rh is not None else type(model).__name__} has no `fixed_dets` "
                         f"hook: --fixed-dets needs RoI heads that honour `fixed_dets` in inference")
    rh.fixed_dets = n


def ours_runner(preset: str, device, fixed_dets: int | None, scale: tuple[int, int] | None,
                checkpoint: Path | None = None, mmdet_checkpoint: Path | None = None, amp: bool = False) -> Runner:
    """Our model as a timed :class:`Runner` (random weights seeded, or a checkpoint); ``amp``: float16 autocast
    on CUDA (ignored on CPU, where the bench refuses it)."""
    import torch

    from refinemask.models import build_model

    torch.manual_seed(SEED)  # random-init weights: the same boxes reach the heads and the paste in every run
    model = build_model(preset)
    if checkpoint is not None:
        _load_our_checkpoint(model, checkpoint)
    if mmdet_checkpoint is not None:
        from refinemask.convert_mmdet import load_mmdet_checkpoint

        load_mmdet_checkpoint(model, mmdet_checkpoint)
    if scale is not None:
        model.transform.test_scale = tuple(scale)
    if fixed_dets is not None:
        set_fixed_dets(model, fixed_dets)
    model.eval()
    transform = copy.deepcopy(model.transform).cpu().eval()  # the "loader worker": preprocessing on the host
    model.to(device)

    def prepare(img):
        batch, _ = transform.preprocess([img])
        if device.type == "cuda":
            batch.tensors = batch.tensors.pin_memory()
        return batch

    @torch.no_grad()
    def forward(batch) -> int:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            out = model(batch.to(device, non_blocking=True))
        res = [{k: v.cpu() for k, v in o.items()} for o in out]
        return sum(int(r["boxes"].shape[0]) for r in res)

    p = model.preset
    info = {"model": f"refinemask-bench {preset}", "mask_head": p.mask_head, "roi_head": p.roi_head,
            "params": _count_params(model), "test_scale": list(model.transform.test_scale),
            "score_thresh": p.roi.score_thresh, "weights": _weights_desc(checkpoint, mmdet_checkpoint),
            "amp": bool(amp and device.type == "cuda")}
    return Runner(preset, prepare, forward, info)


def _weights_desc(checkpoint, mmdet_checkpoint) -> str:
    if checkpoint is not None:
        return str(checkpoint)
    if mmdet_checkpoint is not None:
        return f"mmdet:{mmdet_checkpoint}"
    return "random"


def _load_our_checkpoint(model, path: Path) -> None:
    """A checkpoint of ``rmbench train`` (or a bare state dict), via the engine's weights-only loader."""
    from refinemask.engine.checkpoint import check_preset, load_checkpoint, load_model_state

    ckpt = load_checkpoint(path)
    check_preset(ckpt, model.preset.name, path)
    load_model_state(model, ckpt["model"], path)


def torchvision_runner(device, fixed_dets: int | None, scale: tuple[int, int]) -> Runner:
    """torchvision ``maskrcnn_resnet50_fpn(weights=None)`` (91 classes, its own test settings)."""
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.ops import boxes as box_ops

    long_side, short_side = max(scale), min(scale)
    torch.manual_seed(SEED)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=short_side, max_size=long_side)
    model.eval()
    transform = copy.deepcopy(model.transform).eval()  # resize + normalise + batch/pad: the loader's work
    model.to(device)
    rh = model.roi_heads
    if fixed_dets is not None:
        n = int(fixed_dets)

        def postprocess_topk(class_logits, box_regression, proposals, image_shapes):
            # same replacement as our `fixed_dets`: top-N (proposal, class) pairs, no threshold / NMS
            boxes_per_image = [len(p) for p in proposals]
            pred_boxes = rh.box_coder.decode(box_regression, proposals)
            pred_scores = F.softmax(class_logits, -1)
            all_boxes, all_scores, all_labels = [], [], []
            for boxes, scores, shape in zip(pred_boxes.split(boxes_per_image), pred_scores.split(boxes_per_image),
                                            image_shapes):
                boxes = box_ops.clip_boxes_to_image(boxes, shape)[:, 1:]  # drop background (index 0)
                scores = scores[:, 1:]
                top, idx = scores.reshape(-1).topk(min(n, scores.numel()))
                c = scores.shape[1]
                all_boxes.append(boxes.reshape(-1, 4)[idx])
                all_scores.append(top)
                all_labels.append(idx % c + 1)
            return all_boxes, all_scores, all_labels

        rh.postprocess_detections = postprocess_topk

    def prepare(img):
        x = img.to(torch.float32) / 255.0
        images, _ = transform([x])
        t = images.tensors.pin_memory() if device.type == "cuda" else images.tensors
        return t, images.image_sizes, [tuple(img.shape[-2:])]

    @torch.no_grad()
    def forward(inp) -> int:
        from torchvision.models.detection.image_list import ImageList

        tensors, sizes, orig = inp
        images = ImageList(tensors.to(device, non_blocking=True), sizes)
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        detections = model.transform.postprocess(detections, images.image_sizes, orig)
        res = []
        for d in detections:
            r = {k: v.cpu() for k, v in d.items() if k != "masks"}
            r["masks"] = (d["masks"][:, 0] >= 0.5).cpu()
            res.append(r)
        return sum(int(r["boxes"].shape[0]) for r in res)

    info = {"model": "torchvision maskrcnn_resnet50_fpn(weights=None)", "params": _count_params(model),
            "test_scale": [long_side, short_side], "score_thresh": rh.score_thresh, "weights": "random",
            "notes": "91 classes; BatchNorm2d in eval mode (weights=None; the pretrained model has FrozenBatchNorm2d, "
                     "the same arithmetic); torchvision resize (min_size/max_size) outside the timer"}
    return Runner("torchvision_maskrcnn_resnet50_fpn", prepare, forward, info)


def mmdet_config_path(name: str = "mask-rcnn_r50_fpn_1x_coco") -> Path:
    """The config file shipped inside the installed mmdet package (``mmdet/.mim/configs``)."""
    import mmdet

    root = Path(mmdet.__file__).resolve().parent / ".mim" / "configs"
    hits = sorted(root.rglob(f"{name}.py"))
    if not hits:
        raise MissingFileError(f"{name}.py not found under {root}")
    return hits[0]


def build_mmdet_model(config: str = "mask-rcnn_r50_fpn_1x_coco", device: str = "cpu", seed: int = SEED,
                      scale: tuple[int, int] | None = None):
    """mmdet model from its bundled config, randomly initialised (``init_weights`` after seeding); returns
    (model, cfg). Needs ``make mmdet``."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    from mmengine.logging import MMLogger

    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
    cfg = Config.fromfile(str(mmdet_config_path(config)))
    cfg.model.backbone.init_cfg = None  # no download of torchvision://resnet50
    if scale is not None:
        for t in cfg.test_dataloader.dataset.pipeline:
            if t["type"] == "Resize":
                t["scale"] = (max(scale), min(scale))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.cfg = cfg
    return model.to(device).eval(), cfg


@contextlib.contextmanager
def mmdet_topk_nms(n: int) -> Iterator[None]:
    """Within the block, mmdet's ``multiclass_nms`` (which Mask R-CNN's, PointRend's and HTC's box heads call) is
    replaced by the top-``n`` (box, class) pairs, the rule of our ``fixed_dets``; restored on exit, error or not."""
    import mmdet.models.roi_heads.bbox_heads.bbox_head as bbox_head_mod
    import torch

    orig_nms = bbox_head_mod.multiclass_nms

    def topk_nms(multi_bboxes, multi_scores, score_thr, nms_cfg, max_num=-1, score_factors=None,
                 return_inds=False, box_dim=4):
        scores = multi_scores[:, :-1]  # background is last in mmdet
        c = scores.shape[1]
        boxes = multi_bboxes.view(multi_scores.size(0), -1, box_dim)
        if boxes.shape[1] == 1:
            boxes = boxes.expand(-1, c, box_dim)
        top, idx = scores.reshape(-1).topk(min(n, scores.numel()))
        dets = torch.cat([boxes.reshape(-1, box_dim)[idx], top[:, None]], dim=1)
        return (dets, idx % c, idx) if return_inds else (dets, idx % c)

    bbox_head_mod.multiclass_nms = topk_nms
    try:
        yield
    finally:
        bbox_head_mod.multiclass_nms = orig_nms


def mmdet_runner(device, fixed_dets: int | None, scale: tuple[int, int],
                 config: str = "mask-rcnn_r50_fpn_1x_coco") -> Runner:
    """mmdet's model of ``config`` (a config name in mmdet's bundled configs, e.g.
    ``point-rend_r50-caffe_fpn_ms-1x_coco``, ``htc-without-semantic_r50_fpn_1x_coco``) timed with the same protocol;
    ``fixed_dets`` applies :func:`mmdet_topk_nms` until the runner's ``cleanup``."""
    import mmdet
    import torch
    from mmcv.transforms import Compose

    model, cfg = build_mmdet_model(config, device=str(device), scale=scale)
    # mmdet's test pipeline without the annotation loader; images come decoded (BGR uint8, as cv2 gives them)
    pipeline_cfg = [t for t in copy.deepcopy(cfg.test_dataloader.dataset.pipeline) if t["type"] != "LoadAnnotations"]
    pipeline_cfg[0] = dict(type="mmdet.LoadImageFromNDArray")
    pipeline = Compose(pipeline_cfg)
    pre = copy.deepcopy(model.data_preprocessor).cpu()  # normalise + pad on the host (the loader's work)
    stack = contextlib.ExitStack()
    if fixed_dets is not None:
        stack.enter_context(mmdet_topk_nms(int(fixed_dets)))

    def prepare(img):
        bgr = img.permute(1, 2, 0).flip(-1).contiguous().numpy()  # mmdet loads BGR uint8
        data = pipeline(dict(img=bgr, img_id=0))
        batch = pre(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]), False)
        if device.type == "cuda":
            batch["inputs"] = batch["inputs"].pin_memory()
        return batch

    @torch.no_grad()
    def forward(batch) -> int:
        inputs = batch["inputs"].to(device, non_blocking=True)
        samples = [s.to(device) for s in batch["data_samples"]]
        results = model.predict(inputs, samples, rescale=True)
        res = [r.pred_instances.cpu() for r in results]
        return sum(len(r) for r in res)

    rcnn_cfg = cfg.model.test_cfg.rcnn
    info = {"model": f"mmdetection {mmdet.__version__} {config}", "params": _count_params(model),
            "test_scale": [max(scale), min(scale)], "score_thresh": rcnn_cfg.score_thr,
            "weights": "random (init_weights)",
            "notes": "mmdet test pipeline (cv2 resize on uint8) and data_preprocessor outside the timer"}
    return Runner(f"mmdet_{config}", prepare, forward, info, cleanup=stack.close)


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


