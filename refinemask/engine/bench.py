"""``rmbench bench``: inference speed with the paper's fps protocol (model-spec §6, eval-spec §10).

Protocol (RefineMask ``tools/benchmark.py`` = mmdet ``benchmark.py``): bundled real images
(``data/coco_mini/val2017``, annotation-file order, cycled when more are asked for), **batch 1**, fp32,
``cudnn.benchmark`` off, the preset's test scale. The first ``--warmup`` images (5) run untimed; each of the next
``--images`` images is timed as ``synchronize → forward → synchronize``. Outside the timer: JPEG decoding,
resize / normalise / pad (a data loader's work). Inside: the host→device copy of the preprocessed image,
backbone, FPN, RPN, RoI heads, NMS, the mask branch, pasting masks at the ORIGINAL resolution with ≥ 0.5 and
copying the results to the host. fps = timed images / Σ their times; latency p50/p90 over the timed images.

``--fixed-dets N`` sets ``roi_heads.fixed_dets = N``: score threshold and NMS are replaced by the top-N
(proposal, class) pairs, so a randomly initialised model (near-uniform scores, nothing above 0.05) still sends N
boxes per image through the mask head and the paste. The compared models get the same replacement.

``--compare refinemask_r50_fpn_1x_coco,point_rend_r50_fpn_1x_coco,...`` times our other presets in the same run
(same images, scale and ``--fixed-dets``) and reports each one's mean latency over the ``--preset`` model's — the
paper's Table 2 comparison. ``--compare torchvision`` times torchvision's ``maskrcnn_resnet50_fpn(weights=None)`` in the same run (its
``GeneralizedRCNNTransform`` runs outside the timer; the rest of ``GeneralizedRCNN.forward`` inside, plus the 0.5
threshold and the copy to the host); ``--compare mmdet`` times mmdetection's Mask R-CNN when installed
(``make mmdet``; its test pipeline and data preprocessor run outside the timer).

Peak memory: CUDA ``max_memory_allocated`` during the timed loop (weights included); on CPU the peak process RSS
sampled during the timed loop minus the RSS before any model was built.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import gc
import json
import logging
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger("rmbench.bench")

__all__ = ["add_arguments", "run", "main", "time_loop", "summarize", "BenchResult", "load_images"]

COMPARE_CHOICES = ("torchvision", "mmdet")
#: seed for every randomly initialised model the benchmark builds (ours, torchvision, mmdet): with --fixed-dets the
#: boxes, hence RoIAlign sampling counts and paste areas, then repeat from run to run
SEED = 0


# -- the timer (model-agnostic, unit-tested with fake models) --------------------------------------------
def time_loop(
    fn: Callable[[Any], Any],
    prepare: Callable[[int], Any],
    n_timed: int,
    warmup: int = 5,
    synchronize: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
    on_timed_start: Callable[[], None] | None = None,
) -> list[float]:
    """Run ``warmup`` untimed iterations, then ``n_timed`` timed ones; return the timed durations (seconds).

    Iteration ``i`` (0-based, warm-up first) calls ``x = prepare(i)`` outside the timer, then
    ``synchronize(); t0 = clock(); fn(x); synchronize(); t = clock() - t0``. ``on_timed_start`` is called
    once between the warm-up and the first timed iteration (e.g. to reset peak-memory statistics).
    """
    if n_timed < 1:
        raise ValueError(f"need at least one timed iteration, got {n_timed}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    for i in range(warmup):
        fn(prepare(i))
    synchronize()
    if on_timed_start is not None:
        on_timed_start()
    times = []
    for j in range(n_timed):
        x = prepare(warmup + j)
        synchronize()
        t0 = clock()
        fn(x)
        synchronize()
        times.append(clock() - t0)
    return times


def _percentile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(times: Sequence[float]) -> dict[str, float]:
    """fps = N / Σt (the paper's definition), latency mean / p50 / p90 (linear interpolation) in ms."""
    total = float(sum(times))
    return {
        "fps": len(times) / total if total > 0 else float("inf"),
        "latency_ms_mean": 1000.0 * total / len(times),
        "latency_ms_p50": 1000.0 * _percentile(times, 50),
        "latency_ms_p90": 1000.0 * _percentile(times, 90),
        "total_s": total,
    }


# -- memory --------------------------------------------------------------------------------------------
def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _RSSPeak:
    """Samples the process RSS every ``interval`` s in a thread; ``peak`` in bytes (None off Linux)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak: int | None = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            r = _rss_bytes()
            if r is not None and (self.peak is None or r > self.peak):
                self.peak = r

    def __enter__(self) -> "_RSSPeak":
        if self.peak is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        r = _rss_bytes()
        if r is not None and (self.peak is None or r > self.peak):
            self.peak = r


# -- data -----------------------------------------------------------------------------------------------
def default_image_dir() -> Path:
    from eval.paths import bundled

    return bundled("coco_mini", "val2017")


def list_images(image_dir: Path) -> list[Path]:
    """JPEG/PNG files of ``image_dir`` in the order of ``../annotations/instances_<split>.json`` when present
    (the protocol's annotation-file order), else sorted by name."""
    files = {p.name: p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
    if not files:
        raise FileNotFoundError(f"no images (*.jpg, *.png) in {image_dir}")
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
@dataclass
class Runner:
    """What the timer needs from a model: ``prepare(img) -> x`` (untimed), ``forward(x) -> n_dets`` (timed)."""

    name: str
    prepare: Callable[[Any], Any]
    forward: Callable[[Any], int]
    info: dict = field(default_factory=dict)
    cleanup: Callable[[], None] = lambda: None


def _count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def set_fixed_dets(model, n: int | None) -> None:
    """Set ``fixed_dets`` on the model's RoI heads (the hook every RoI-head class declares)."""
    rh = getattr(model, "roi_heads", None)
    if rh is None or not hasattr(rh, "fixed_dets"):
        raise ValueError(f"{type(rh).__name__ if rh is not None else type(model).__name__} has no `fixed_dets` "
                         f"hook: --fixed-dets needs RoI heads that honour `fixed_dets` in inference")
    rh.fixed_dets = n


def ours_runner(preset: str, device, fixed_dets: int | None, scale: tuple[int, int] | None,
                checkpoint: Path | None = None, mmdet_checkpoint: Path | None = None) -> Runner:
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
        out = model(batch.to(device, non_blocking=True))
        res = [{k: v.cpu() for k, v in o.items()} for o in out]
        return sum(int(r["boxes"].shape[0]) for r in res)

    p = model.preset
    info = {"model": f"refinemask-bench {preset}", "mask_head": p.mask_head, "roi_head": p.roi_head,
            "params": _count_params(model), "test_scale": list(model.transform.test_scale),
            "score_thresh": p.roi.score_thresh, "weights": _weights_desc(checkpoint, mmdet_checkpoint)}
    return Runner(preset, prepare, forward, info)


def _weights_desc(checkpoint, mmdet_checkpoint) -> str:
    if checkpoint is not None:
        return str(checkpoint)
    if mmdet_checkpoint is not None:
        return f"mmdet:{mmdet_checkpoint}"
    return "random"


def _load_our_checkpoint(model, path: Path) -> None:
    """A checkpoint of ``rmbench train`` (or a bare state dict), via the engine's weights-only loader."""
    from refinemask.engine.checkpoint import load_checkpoint, load_model_state

    ckpt = load_checkpoint(path)
    if ckpt.get("preset") not in (None, model.preset.name):
        raise ValueError(f"{path} was trained with preset {ckpt['preset']!r}, not {model.preset.name!r}. "
                         f"Fix: pass --preset {ckpt['preset']}")
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
        raise FileNotFoundError(f"{name}.py not found under {root}")
    return hits[0]


def build_mmdet_model(config: str = "mask-rcnn_r50_fpn_1x_coco", device: str = "cpu", seed: int = SEED,
                      scale: tuple[int, int] | None = None):
    """mmdet model from its bundled config, randomly initialised (``init_weights`` after seeding); returns
    (model, cfg). Needs ``make mmdet``."""
    import torch
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

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


def mmdet_runner(device, fixed_dets: int | None, scale: tuple[int, int],
                 config: str = "mask-rcnn_r50_fpn_1x_coco") -> Runner:
    """mmdet's model of ``config`` (a config name in mmdet's bundled configs, e.g. ``point-rend_r50-caffe_fpn_ms-1x_coco``,
    ``htc-without-semantic_r50_fpn_1x_coco``) timed with the same protocol; ``--fixed-dets`` replaces mmdet's
    ``multiclass_nms`` (which Mask R-CNN's, PointRend's and HTC's box heads all call) by the same top-N rule."""
    import torch
    from mmcv.transforms import Compose

    import mmdet
    import mmdet.models.roi_heads.bbox_heads.bbox_head as bbox_head_mod

    model, cfg = build_mmdet_model(config, device=str(device), scale=scale)
    # mmdet's test pipeline without the annotation loader; images come decoded (BGR uint8, as cv2 gives them)
    pipeline_cfg = [t for t in copy.deepcopy(cfg.test_dataloader.dataset.pipeline) if t["type"] != "LoadAnnotations"]
    pipeline_cfg[0] = dict(type="mmdet.LoadImageFromNDArray")
    pipeline = Compose(pipeline_cfg)
    pre = copy.deepcopy(model.data_preprocessor).cpu()  # normalise + pad on the host (the loader's work)
    restore = None
    if fixed_dets is not None:
        n = int(fixed_dets)
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

        def restore():
            bbox_head_mod.multiclass_nms = orig_nms

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
    return Runner(f"mmdet_{config}", prepare, forward, info, cleanup=restore or (lambda: None))


# -- orchestration -------------------------------------------------------------------------------------
@dataclass
class BenchResult:
    name: str
    times: list[float]
    dets: list[int]
    peak_memory_mb: float | None
    memory_kind: str
    info: dict

    def as_dict(self) -> dict:
        d = {"name": self.name, **summarize(self.times), "peak_memory_mb": self.peak_memory_mb,
             "memory_kind": self.memory_kind, "images_timed": len(self.times),
             "dets_per_image_mean": sum(self.dets) / max(len(self.dets), 1)}
        d.update(self.info)
        return d


def bench_runner(runner: Runner, images, n_timed: int, warmup: int, device, repeats: int = 1,
                 baseline_rss: int | None = None) -> BenchResult:
    """Time ``runner`` on ``images`` (cycled): ``warmup`` untimed + ``n_timed`` timed images, ``repeats`` times."""
    import torch

    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    dets: list[int] = []

    def fn(x):
        dets.append(runner.forward(x))

    def prepare(i):
        return runner.prepare(images[i % len(images)])

    times: list[float] = []
    peak_mb = None
    for _ in range(repeats):
        dets.clear()
        sampler = _RSSPeak() if not cuda else None

        def on_timed_start():
            if cuda:  # the peak then covers the timed images (weights and cached workspaces included)
                torch.cuda.reset_peak_memory_stats(device)
            else:
                sampler.__enter__()

        try:
            times += time_loop(fn, prepare, n_timed, warmup, synchronize=sync, on_timed_start=on_timed_start)
        finally:
            if sampler is not None:
                sampler.__exit__(None, None, None)
        if cuda:
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        elif sampler.peak is not None:
            peak = (sampler.peak - (baseline_rss or 0)) / 2**20
        else:
            peak = None
        if peak is not None:
            peak_mb = max(peak_mb or 0.0, peak)
    kind = "cuda_max_memory_allocated" if cuda else "process_rss_peak_above_baseline"
    res = BenchResult(runner.name, times, dets[-n_timed:], None if peak_mb is None else round(peak_mb, 1), kind,
                      dict(runner.info))
    if repeats > 1:
        res.info["fps_per_repeat"] = [summarize(times[i * n_timed:(i + 1) * n_timed])["fps"] for i in range(repeats)]
    return res


def bench_interleaved(runners: Sequence[Runner], images, n_timed: int, warmup: int, device, repeats: int = 1,
                      clock: Callable[[], float] = time.perf_counter) -> list[BenchResult]:
    """Time several resident models image by image (``rmbench bench --interleave``).

    Each runner first runs its ``warmup`` images untimed; then for every timed image every runner runs once —
    ``prepare`` outside the timer, ``synchronize → forward → synchronize`` inside — with the order rotating by one
    per image, so a slow-down of a shared machine (other tenants, clock changes) falls on all models alike and the
    latency ratios stay comparable. The timed image sequence is repeated ``repeats`` times. Peak memory is not
    measured (every model is resident); use the sequential mode for it.
    """
    import torch

    if n_timed < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"need n_timed >= 1, warmup >= 0, repeats >= 1; got {n_timed}, {warmup}, {repeats}")
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    for r in runners:
        for i in range(warmup):
            r.forward(r.prepare(images[i % len(images)]))
    times: list[list[float]] = [[] for _ in runners]
    dets: list[list[int]] = [[] for _ in runners]
    n = len(runners)
    for j in range(n_timed * repeats):
        image = images[(warmup + j % n_timed) % len(images)]
        for k in ((j + t) % n for t in range(n)):
            x = runners[k].prepare(image)
            sync()
            t0 = clock()
            dets[k].append(runners[k].forward(x))
            sync()
            times[k].append(clock() - t0)
    results = []
    for k, r in enumerate(runners):
        res = BenchResult(r.name, times[k], dets[k][-n_timed:], None, "not measured (--interleave)", dict(r.info))
        if repeats > 1:
            res.info["fps_per_repeat"] = [summarize(times[k][i * n_timed:(i + 1) * n_timed])["fps"]
                                          for i in range(repeats)]
        results.append(res)
    return results


def count_gmacs(runner: Runner, image) -> float:
    """Multiply-accumulates (×1e9) of one forward of ``runner`` on ``image`` (untimed).

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, transposed convolutions, matrix products:
    the ops CPU inference time is bound by; RoIAlign, NMS, interpolation and the paste have no FLOP formula there
    and count 0). FLOPs / 2 = MACs. Depends on the detections (``--fixed-dets`` makes it fixed per image).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = runner.prepare(image)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        runner.forward(x)
    return counter.get_total_flops() / 2e9


def _device_name(device) -> str:
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


def provenance(device, args, image_dir: Path, n_unique: int) -> dict:
    import torch
    import torchvision

    prov = {
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "torch_threads": torch.get_num_threads(),
        "precision": "fp32",
        "batch_size": 1,
        "warmup": args.warmup,
        "images": args.images,
        "unique_images": n_unique,
        "image_dir": str(image_dir),
        "repeats": args.repeats,
        "fixed_dets": args.fixed_dets,
        "interleaved": bool(args.interleave),
        "seed": SEED,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "protocol": "batch 1; first `warmup` images untimed; synchronize around each forward; preprocessing "
                    "outside the timer; H2D copy, NMS, mask paste at original size (>=0.5) and D2H copy inside",
    }
    if device.type == "cuda":
        prov["driver"] = _nvidia_driver()
    return prov


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return None


def _parse_scale(s: str | None) -> tuple[int, int] | None:
    if s is None:
        return None
    try:
        a, b = (int(v) for v in s.replace("x", ",").split(","))
    except ValueError:
        raise ValueError(f"--scale must be LONG,SHORT (e.g. 1333,800), got {s!r}") from None
    return max(a, b), min(a, b)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", required=True, help="preset name (rmbench models / refinemask.list_presets())")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu")
    p.add_argument("--fixed-dets", type=int, default=None, metavar="N",
                   help="replace score threshold + NMS by the top-N (box, class) pairs so randomly initialised "
                        "models time the mask head on N detections (e.g. 100)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="timed images (default: the bundled images after the warm-up ones, each once; "
                        "cycles through the images when larger)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up images before the timed ones (5)")
    p.add_argument("--repeats", type=int, default=1, help="repeat the timed loop (eval-spec §10 asks for >= 2)")
    p.add_argument("--scale", default=None, metavar="LONG,SHORT",
                   help="override the preset's test scale (same for every compared model; default: the preset's)")
    p.add_argument("--image-dir", type=Path, default=None, help="default: the bundled data/coco_mini/val2017")
    p.add_argument("--checkpoint", type=Path, default=None, help="our state dict (weights_only); default random")
    p.add_argument("--mmdet-checkpoint", type=Path, default=None,
                   help="an mmdet Mask R-CNN checkpoint, converted with refinemask.convert_mmdet")
    p.add_argument("--compare", default="", help=f"comma-separated: {','.join(COMPARE_CHOICES)}, mmdet:<mmdet config "
                   "name> (e.g. mmdet:point-rend_r50-caffe_fpn_ms-1x_coco), and/or preset names, timed in the same run "
                   "with their latency ratio to --preset")
    p.add_argument("--interleave", action="store_true",
                   help="keep every compared model resident and time them image by image in rotating order, so "
                        "that drift on a shared machine hits all alike (robust latency ratios; no peak memory)")
    p.add_argument("--flops", action="store_true",
                   help="also count each model's GMACs on the first timed image (one extra untimed forward; "
                        "torch.utils.flop_counter) and report the GMAC ratio beside the latency ratio")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON object to this file")


def run(args: argparse.Namespace) -> int:
    import torch

    from refinemask.registry import get_preset

    try:
        preset = get_preset(args.preset)
    except KeyError as e:
        raise ValueError(str(e).strip("'\"")) from None
    from refinemask.registry import PRESETS

    compare = [c.strip() for c in (args.compare or "").split(",") if c.strip()]
    bad = [c for c in compare if c not in COMPARE_CHOICES and c not in PRESETS and not c.startswith("mmdet:")]
    if bad:
        raise ValueError(f"--compare: unknown {bad}; choose from {list(COMPARE_CHOICES)} or preset names "
                         f"(rmbench models)")
    if args.fixed_dets is not None and args.fixed_dets < 1:
        raise ValueError(f"--fixed-dets must be >= 1, got {args.fixed_dets}")
    if args.warmup < 0 or args.repeats < 1 or (args.images is not None and args.images < 1):
        raise ValueError("--warmup must be >= 0, --repeats and --images >= 1")
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu)")
    device = torch.device(dev)
    if any(c == "mmdet" or c.startswith("mmdet:") for c in compare):
        try:
            import mmdet  # noqa: F401
        except ImportError:
            raise ValueError("--compare mmdet: mmdetection not installed: run `make mmdet`") from None
    torch.backends.cudnn.benchmark = False
    scale = _parse_scale(args.scale) or tuple(preset.test_scale)

    image_dir = args.image_dir or default_image_dir()
    paths = list_images(Path(image_dir))
    n_timed = args.images or max(len(paths) - args.warmup, 1)  # default: every image once, warm-up included
    args.images = n_timed
    needed = min(len(paths), n_timed + args.warmup)
    images = load_images(paths[:needed])
    baseline = _rss_bytes()
    if args.fixed_dets is None and args.checkpoint is None and args.mmdet_checkpoint is None:
        log.warning("random weights without --fixed-dets: almost nothing passes the score threshold, so the mask "
                    "head is barely timed; use --fixed-dets 100")

    results = []
    builders = [("ours", lambda: ours_runner(preset.name, device, args.fixed_dets, scale if args.scale else None,
                                             args.checkpoint, args.mmdet_checkpoint))]
    for other in compare:  # our other presets, at the same scale and fixed-dets load (a Table 2-style comparison)
        if other in PRESETS:
            builders.append((other, lambda other=other: ours_runner(other, device, args.fixed_dets,
                                                                     scale if args.scale else None)))
    if "torchvision" in compare:
        builders.append(("torchvision", lambda: torchvision_runner(device, args.fixed_dets, scale)))
    if "mmdet" in compare:
        builders.append(("mmdet", lambda: mmdet_runner(device, args.fixed_dets, scale)))
    for c in compare:  # mmdet:<config name>, e.g. mmdet:point-rend_r50-caffe_fpn_ms-1x_coco
        if c.startswith("mmdet:"):
            builders.append((c, lambda c=c: mmdet_runner(device, args.fixed_dets, scale, c.split(":", 1)[1])))
    if args.interleave:
        runners = []
        try:
            for label, build in builders:
                log.info("bench: building %s", label)
                runners.append(build())
            log.info("bench: %d models interleaved — %d warm-up + %d timed images × %d repeat(s) on %s",
                     len(runners), args.warmup, n_timed, args.repeats, dev)
            results = bench_interleaved(runners, images, n_timed, args.warmup, device, args.repeats)
            if args.flops:
                for r, res in zip(runners, results):
                    res.info["gmacs"] = round(count_gmacs(r, images[args.warmup % len(images)]), 3)
        finally:
            for r in reversed(runners):  # undo monkeypatches (mmdet's fixed-dets hook) in reverse order
                r.cleanup()
            del runners
            gc.collect()
    else:
        for label, build in builders:
            log.info("bench: building %s", label)
            runner = build()
            try:
                log.info("bench: %s — %d warm-up + %d timed images × %d repeat(s) on %s", runner.name, args.warmup,
                         n_timed, args.repeats, dev)
                results.append(bench_runner(runner, images, n_timed, args.warmup, device, args.repeats, baseline))
                if args.flops:
                    results[-1].info["gmacs"] = round(count_gmacs(runner, images[args.warmup % len(images)]), 3)
            finally:
                runner.cleanup()
                del runner
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    main_res = results[0].as_dict()
    obj = {
        "preset": preset.name,
        "device": dev,
        "fps": main_res["fps"],
        "latency_ms_p50": main_res["latency_ms_p50"],
        "latency_ms_p90": main_res["latency_ms_p90"],
        "peak_memory_mb": main_res["peak_memory_mb"],
        "latency_ms_mean": main_res["latency_ms_mean"],
        "memory_kind": main_res["memory_kind"],
        "dets_per_image_mean": main_res["dets_per_image_mean"],
        "model": {k: v for k, v in main_res.items() if k not in ("fps", "latency_ms_p50", "latency_ms_p90",
                                                                  "peak_memory_mb", "latency_ms_mean",
                                                                  "memory_kind", "dets_per_image_mean")},
        **provenance(device, args, Path(image_dir), len(paths)),
    }
    if len(results) > 1:
        obj["compare"] = {label: {**r.as_dict(), "latency_ratio": r.as_dict()["latency_ms_mean"]
                                  / main_res["latency_ms_mean"]}
                          for (label, _), r in zip(builders[1:], results[1:])}
        if "gmacs" in main_res:
            for c in obj["compare"].values():
                c["gmac_ratio"] = c["gmacs"] / main_res["gmacs"]
    text = json.dumps(obj, indent=2, default=str)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print(_table(results, obj))
    return 0


def _table(results: list[BenchResult], obj: dict) -> str:
    flops = all("gmacs" in r.info for r in results)
    lines = [f"device: {obj['device']} ({obj['device_name']}), torch {obj['torch']}, {obj['torch_threads']} threads, "
             f"batch 1, fp32, {obj['warmup']} warm-up + {obj['images']} timed images"
             + (f", fixed_dets={obj['fixed_dets']}" if obj["fixed_dets"] else ""),
             "",
             "| model | fps | latency p50 (ms) | p90 (ms) | mean latency / first row's | peak memory (MiB) | dets/img |"
             + (" GMACs | GMACs / first row's |" if flops else ""),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if flops else "")]
    ref = results[0].as_dict()["latency_ms_mean"]
    for r in results:
        d = r.as_dict()
        mem = "n/a" if d["peak_memory_mb"] is None else f"{d['peak_memory_mb']:.0f}"
        row = (f"| {r.name} | {d['fps']:.3f} | {d['latency_ms_p50']:.1f} | {d['latency_ms_p90']:.1f} | "
               f"{d['latency_ms_mean'] / ref:.2f} | {mem} | {d['dets_per_image_mean']:.1f} |")
        if flops:
            row += f" {d['gmacs']:.1f} | {d['gmacs'] / results[0].info['gmacs']:.2f} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m refinemask.engine.bench ...`` (the same as ``rmbench bench``)."""
    p = argparse.ArgumentParser(prog="rmbench bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"rmbench bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
