"""The training loop: mmdet's recipe (SGD, linear warm-up, step schedule) on our datasets and models, alone or
under ``torchrun`` (DDP), with exact resume.

Recipe (docs/models.md §1.1, config.Schedule): SGD momentum 0.9, weight decay 1e-4 on all trainable parameters,
lr = ``Schedule.lr_for_batch(total batch)`` (0.02 × images / 16), linear warm-up from ``warmup_ratio · lr`` over
``warmup_iters``, ×``lr_gamma`` after each step epoch, optional gradient clipping (L2 norm; RefineMask: 35), AMP
(float16 autocast + GradScaler) on CUDA. The schedule is given in epochs; iterations per epoch come from the
aspect-ratio grouped sampler (:class:`~refinemask.data.GroupedBatchSampler`). ``max_iters`` / ``epochs``
overrides rescale the step points proportionally (tiny runs keep the schedule's shape).

Outputs under ``work_dir``: ``config.json`` (options + the preset), ``log.csv`` (one row per logged iteration),
``tb/`` (TensorBoard scalars), ``iter_N.pth`` + ``latest.pth`` (atomic, see :mod:`.checkpoint`),
``eval/iter_N/`` (results.json, metrics.json / .md, per_instance.csv) and ``metrics.json`` (the last evaluation).

Exact resume: a checkpoint stores model, optimizer, scheduler, AMP scaler, the iteration (from which the
sampler's epoch and position follow) and every rank's python / numpy / torch RNG states. Data-loader workers
use no randomness (flips are drawn by the sampler), and the loader gets its own ``torch.Generator``, so the loss
sequence after ``--resume`` equals the uninterrupted run's on CPU (on CUDA up to non-deterministic kernels).
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from eval.errors import UsageError
from refinemask.config import Preset
from refinemask.data import (
    GroupedBatchSampler,
    InstanceDataset,
    collate,
    expand_indices,
    repeat_factors,
    resolve_data_paths,
)
from refinemask.registry import get_preset

from . import distributed as du
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    atomic_copy,
    atomic_torch_save,
    check_preset,
    get_rng_state,
    load_checkpoint,
    load_model_state,
    set_rng_state,
    unwrap_model,
)
from .inference import evaluate_results, inference_on_dataset, run_info

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "Trainer", "WarmupStepSchedule", "apply_overrides", "apply_cfg_options", "seed_all",
           "recalibrate_bn", "train"]

#: target entries moved to the device and handed to the model (the others are bookkeeping)
TARGET_KEYS = ("boxes", "labels", "masks", "crowd_masks", "semantic_seg")


def _semantic_inputs(p: Preset) -> tuple[Path | None, bool]:
    """What the preset's mask branch needs from the data (HTC: label-map folder for ``semantic="stuff"``, crowd
    masks for ``semantic="things"``); raises ValueError before any training when it is missing."""
    return p.mask_head_cfg.data_needs(p.name)


class DivergedError(UsageError, FloatingPointError):
    """Training produced a non-finite loss: the options chosen do not train (the message names those that help)."""


# ------------------------------------------------------------------------------------------------------------
# options
@dataclass
class TrainConfig:
    """Options of one training run (the ``rmbench train`` flags).

    Attributes:
        preset: preset name or a :class:`~refinemask.config.Preset` (e.g. a ``dataclasses.replace`` variant).
        work_dir: output folder (created).
        data_root: dataset root in its standard layout (:data:`refinemask.data.STANDARD_LAYOUTS`).
        train_json / train_images / val_json / val_images: explicit overrides of the layout.
        train_image_ids: train on these image ids only (e.g. the overfit recipe).
        batch_size: images per iteration PER PROCESS (mmdet ``samples_per_gpu``; total = × world size).
        num_workers: data-loader worker processes per rank.
        max_iters / epochs: override the preset's schedule length (at most one of them).
        lr: base learning rate for the TOTAL batch (default ``Schedule.lr_for_batch(total batch)``).
        warmup_iters: override the schedule's warm-up length.
        grad_clip: max gradient L2 norm (None: the preset's; 0: no clipping).
        amp: float16 autocast + GradScaler (None: on when training on CUDA).
        seed: seeds python / numpy / torch and the sampler.
        img_scale: (long, short) train AND test scale override; multiscale: (min short, max short) range
            for training (long side from img_scale or the preset).
        flip_ratio: override the preset's flip probability.
        checkpoint_interval: iterations between checkpoints (None: once per epoch; always at the end).
        keep_checkpoints: keep the newest K ``iter_N.pth`` files (0: all).
        eval_interval: iterations between evaluations on the val set (None: once per epoch; 0: only at the end;
            negative: never). Needs a val split.
        eval_metrics: evaluator groups (``coco``, ``boundary_f``, ...).
        log_interval: iterations between log rows (CSV / TensorBoard / console); the last iteration is always
            logged.
        resume: ``"auto"`` (``work_dir/latest.pth``) or a checkpoint path; None starts fresh.
        backbone_weights: LOCAL torchvision ImageNet state dict for the backbone (else random init + warning).
        bn_recalibration_batches: with a random-init backbone, re-estimate its frozen BatchNorm statistics on
            this many training batches before step 1 (0: off). Without ImageNet weights the BN layers hold
            mean 0 / var 1 and deep activations explode; this makes from-scratch short runs (e.g. the overfit
            recipe) train.
        device: ``"cpu"``, ``"cuda"`` (default: CUDA if available).
        cfg_options: ``KEY=VALUE`` preset overrides (:func:`apply_cfg_options`), e.g.
            ``roi.batch_size_per_image=64``.
        cpu_threads: ``torch.set_num_threads`` for this process (None: torch's default). On a CPU shared with
            other jobs, 1 thread is often several times faster than oversubscribed OpenMP threads.
        tensorboard / progress: TensorBoard writer / tqdm bar on rank 0.
    """

    preset: str | Preset
    work_dir: str | os.PathLike
    data_root: str | os.PathLike | None = None
    train_json: str | os.PathLike | None = None
    train_images: str | os.PathLike | None = None
    val_json: str | os.PathLike | None = None
    val_images: str | os.PathLike | None = None
    train_image_ids: Sequence[int] | None = None
    batch_size: int = 2
    num_workers: int = 2
    max_iters: int | None = None
    epochs: int | None = None
    lr: float | None = None
    warmup_iters: int | None = None
    grad_clip: float | None = None
    amp: bool | None = None
    seed: int = 0
    img_scale: tuple[int, int] | None = None
    multiscale: tuple[int, int] | None = None
    flip_ratio: float | None = None
    checkpoint_interval: int | None = None
    keep_checkpoints: int = 0
    eval_interval: int | None = None
    eval_metrics: Sequence[str] = ("coco",)
    log_interval: int = 20
    resume: str | os.PathLike | None = None
    backbone_weights: str | os.PathLike | None = None
    bn_recalibration_batches: int = 0
    device: str | None = None
    tensorboard: bool = True
    progress: bool = True
    cfg_options: Sequence[str] | None = None
    cpu_threads: int | None = None

    def to_plain(self) -> dict[str, Any]:
        """JSON- and ``weights_only``-safe copy (paths → str, tuples → lists, preset → its name)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Preset):
                v = v.name
            out[f.name] = _plain(v)
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return repr(v)


def apply_overrides(preset: Preset, *, img_scale: tuple[int, int] | None = None,
                    multiscale: tuple[int, int] | None = None, flip_ratio: float | None = None) -> Preset:
    """The preset with train/test scale, multi-scale range and flip ratio overridden."""
    changes: dict[str, Any] = {}
    if img_scale is not None:
        changes.update(train_scales=(tuple(img_scale),), test_scale=tuple(img_scale), multiscale_mode="value")
    if multiscale is not None:
        long = max(img_scale) if img_scale else max(max(s) for s in preset.train_scales)
        lo, hi = sorted(multiscale)
        changes.update(train_scales=((long, lo), (long, hi)), multiscale_mode="range")
    if flip_ratio is not None:
        changes["flip_ratio"] = float(flip_ratio)
    return dataclasses.replace(preset, **changes) if changes else preset


def _parse_value(text: str) -> Any:
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v


def apply_cfg_options(preset: Preset, options: Sequence[str] | dict[str, Any] | None) -> Preset:
    """Override preset fields from ``KEY=VALUE`` strings (mmdet ``--cfg-options``), nested with dots.

    Examples: ``roi.batch_size_per_image=64``, ``rpn.post_nms_top_n_test=300``, ``roi.detections_per_img=20``,
    ``frozen_stages=4``, ``schedule.warmup_iters=100``. Values are parsed as json (numbers, true/false, lists →
    tuples), else kept as strings.

    Raises:
        ValueError: malformed option or unknown field (the message lists the valid fields).
    """
    if not options:
        return preset
    items = options.items() if isinstance(options, dict) else []
    if not isinstance(options, dict):
        parsed = []
        for opt in options:
            if "=" not in opt:
                raise UsageError(f"--cfg-options {opt!r}: expected KEY=VALUE, e.g. roi.batch_size_per_image=64")
            k, v = opt.split("=", 1)
            parsed.append((k.strip(), _parse_value(v.strip())))
        items = parsed
    for key, value in items:
        parts = key.split(".")

        def _set(obj: Any, path: list[str], key: str = key, value: Any = value) -> Any:
            names = {f.name for f in dataclasses.fields(obj)}
            if path[0] not in names:
                raise UsageError(f"--cfg-options {key}: {type(obj).__name__} has no field {path[0]!r}; "
                                 f"fields: {', '.join(sorted(names))}")
            if len(path) == 1:
                return dataclasses.replace(obj, **{path[0]: value})
            child = getattr(obj, path[0])
            if not dataclasses.is_dataclass(child):
                raise UsageError(f"--cfg-options {key}: {path[0]!r} is not a nested config")
            return dataclasses.replace(obj, **{path[0]: _set(child, path[1:])})

        preset = _set(preset, parts)
    return preset


def seed_all(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class WarmupStepSchedule:
    """lr factor at iteration ``it`` (0-based): mmdet step policy with linear warm-up.

    ``factor(it) = gamma ** #{s in steps: s <= it}`` × (``1 − (1 − it / warmup) (1 − ratio)`` while
    ``it < warmup``). A callable object (not a lambda) so ``LambdaLR.state_dict()`` stores its fields.
    """

    def __init__(self, steps: Sequence[int], gamma: float = 0.1, warmup_iters: int = 500,
                 warmup_ratio: float = 0.001) -> None:
        self.steps = sorted(int(s) for s in steps)
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)

    def __call__(self, it: int) -> float:
        f = self.gamma ** bisect.bisect_right(self.steps, it)
        if it < self.warmup_iters:
            f *= 1.0 - (1.0 - it / self.warmup_iters) * (1.0 - self.warmup_ratio)
        return f


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[list[torch.Tensor]], device: torch.device) -> int:
    """Re-estimate the backbone's BatchNorm running statistics on ``batches`` of images (precise-BN style).

    Every ``nn.BatchNorm2d`` of ``model.backbone.body`` gets its statistics reset and replaced by the exact
    average over the batches' activations (momentum None); afterwards the layers return to eval mode (frozen
    statistics, mmdet ``norm_eval``). Returns the number of layers updated (0 for FrozenBatchNorm backbones).
    """
    model = unwrap_model(model)
    body = model.backbone.body
    bns = [m for m in body.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        log.warning("recalibrate_bn: the backbone has no nn.BatchNorm2d (frozen_bn norm?): nothing done")
        return 0
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for images in batches:
            batch, _ = model.transform.preprocess([im.to(device) for im in images])
            model.backbone(batch.tensors)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
        for m in bns:  # ResNetFPN.train keeps BN in eval mode; make sure even when the model is in eval
            m.eval()
    return len(bns)


# ------------------------------------------------------------------------------------------------------------
class Trainer:
    """Builds data, model, optimizer and schedule from a :class:`TrainConfig`; :meth:`train` runs the loop.

    Under torchrun every rank constructs its own Trainer; the model is wrapped in DDP
    (``find_unused_parameters=False``), rank 0 writes logs and checkpoints.

    Attributes (after construction): preset, model (DDP-wrapped when distributed), optimizer, scheduler,
    scaler, train_set, val_set, sampler, max_iter, start_iter, iters_per_epoch, dist.

    Raises:
        ValueError / DatasetError / CheckpointError: bad options, data or checkpoint (messages name the fix).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        if cfg.max_iters is not None and cfg.epochs is not None:
            raise UsageError("give at most one of --max-iters and --epochs")
        if cfg.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {cfg.batch_size}")
        self.cfg = cfg
        self.work_dir = Path(cfg.work_dir)
        self.dist = du.init_distributed(cfg.device)
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        if cfg.cpu_threads:
            torch.set_num_threads(int(cfg.cpu_threads))
        if self.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        seed_all(cfg.seed)

        base = get_preset(cfg.preset) if isinstance(cfg.preset, str) else cfg.preset
        self.preset = apply_overrides(apply_cfg_options(base, cfg.cfg_options), img_scale=cfg.img_scale,
                                      multiscale=cfg.multiscale, flip_ratio=cfg.flip_ratio)
        p = self.preset

        # -- data --------------------------------------------------------------------------------------
        train_paths = resolve_data_paths(p.dataset, "train", cfg.data_root, cfg.train_json, cfg.train_images)
        if train_paths is None:
            raise UsageError("no training data: give --data-root (standard layout) or --train-json and --train-images")
        self.train_paths = train_paths
        semantic_root, crowd = _semantic_inputs(p)
        self.train_set = InstanceDataset(train_paths.json, train_paths.images, with_masks=True, filter_empty=True,
                                         image_ids=cfg.train_image_ids, semantic_root=semantic_root,
                                         with_crowd_masks=crowd)
        if self.train_set.num_classes != p.num_classes:
            raise UsageError(f"{train_paths.json} has {self.train_set.num_classes} categories but preset {p.name!r} "
                             f"predicts {p.num_classes} classes. Fix: pick the preset made for this dataset, or "
                             f"dataclasses.replace(preset, num_classes={self.train_set.num_classes})")
        self.val_paths = resolve_data_paths(p.dataset, "val", cfg.data_root, cfg.val_json, cfg.val_images,
                                            required=False)
        self.val_set = None
        if self.val_paths is not None:
            self.val_set = InstanceDataset(self.val_paths.json, self.val_paths.images, with_masks=False,
                                           categories=self.train_set.cat_ids)
        self.sampler_seed = cfg.seed
        indices = expand_indices(
            len(self.train_set), p.schedule.dataset_repeat,
            repeat_factors(self.train_set, p.oversample_thr) if p.sampler == "class_balanced" and p.oversample_thr
            else None)

        # -- model ---------------------------------------------------------------------------------------
        from refinemask.models import build_model

        self.random_init = cfg.backbone_weights is None
        model = build_model(p, backbone_weights=cfg.backbone_weights)
        if self.random_init and p.pretrained == "imagenet" and cfg.resume is None and self.is_main:
            log.warning("no --backbone-weights: the %s backbone is RANDOMLY initialised (the preset expects "
                        "ImageNet weights). Expect far lower AP than the paper; pass a local torchvision state "
                        "dict, e.g. --backbone-weights resnet50-0676ba61.pth", p.backbone)
        model.to(self.device)
        self.model = model
        self.params = [q for q in model.parameters() if q.requires_grad]
        total_batch = cfg.batch_size * self.dist.world_size
        self.base_lr = cfg.lr if cfg.lr is not None else p.schedule.lr_for_batch(total_batch)
        self.optimizer = torch.optim.SGD(self.params, lr=self.base_lr, momentum=p.schedule.momentum,
                                         weight_decay=p.schedule.weight_decay)
        self.amp = bool(cfg.amp) if cfg.amp is not None else self.device.type == "cuda"
        if self.amp and self.device.type != "cuda":
            log.warning("AMP requested on %s: disabled (float16 autocast is used on CUDA only)", self.device)
            self.amp = False
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        clip = cfg.grad_clip if cfg.grad_clip is not None else p.schedule.grad_clip_norm
        self.grad_clip = float(clip) if clip else None

        # -- schedule --------------------------------------------------------------------------------------
        probe = GroupedBatchSampler(self.train_set.aspect_ratio_flags(), cfg.batch_size, indices=indices,
                                    flip_ratio=p.flip_ratio, seed=self.sampler_seed, rank=self.dist.rank,
                                    world_size=self.dist.world_size)
        self.iters_per_epoch = probe.batches_per_epoch
        sched = p.schedule
        if cfg.max_iters is not None:
            self.max_iter = int(cfg.max_iters)
            steps = [int(round(s / sched.epochs * self.max_iter)) for s in sched.lr_steps]
        else:
            epochs = cfg.epochs if cfg.epochs is not None else sched.epochs
            self.max_iter = int(epochs * self.iters_per_epoch)
            steps = [int(round(s / sched.epochs * epochs)) * self.iters_per_epoch for s in sched.lr_steps]
        if self.max_iter < 1:
            raise UsageError(f"nothing to train: {self.max_iter} iterations")
        warmup = cfg.warmup_iters if cfg.warmup_iters is not None else sched.warmup_iters
        if warmup >= self.max_iter:
            log.warning("warm-up (%d iterations) is not shorter than the run (%d): lr never reaches %.4g; "
                        "pass --warmup-iters", warmup, self.max_iter, self.base_lr)
        self.lr_schedule = WarmupStepSchedule(steps, sched.lr_gamma, warmup, sched.warmup_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_schedule)
        self.checkpoint_interval = cfg.checkpoint_interval or self.iters_per_epoch
        if cfg.eval_interval is None:
            self.eval_interval = self.iters_per_epoch
        else:
            self.eval_interval = int(cfg.eval_interval)

        self._tb = None  # TensorBoard writer (rank 0, opened by train())
        self._csv_fields: list[str] | None = None

        # -- resume -------------------------------------------------------------------------------------
        self.start_iter = 0
        self.resumed_from = None
        if cfg.resume is not None:
            self._resume(cfg.resume)
        else:
            if cfg.bn_recalibration_batches and self.random_init:
                self._recalibrate(indices)
            seed_all(cfg.seed + self.dist.rank)  # per-rank stream for sampling / scale choice
        self.sampler = GroupedBatchSampler(self.train_set.aspect_ratio_flags(), cfg.batch_size, indices=indices,
                                           flip_ratio=p.flip_ratio, seed=self.sampler_seed, rank=self.dist.rank,
                                           world_size=self.dist.world_size, start_iter=self.start_iter)
        if self.dist.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False)
        self.total_batch = total_batch
        self.run = run_info(p, dataset=p.dataset, train_json=str(train_paths.json),
                            val_json=str(self.val_paths.json) if self.val_paths else None)
        self.run["train"] = self._train_record(0)
        log.info("preset %s: %d train images, %d iterations (%d per epoch), batch %d x %d, lr %.4g, warm-up %d, "
                 "steps %s, clip %s, amp %s, device %s", p.name, len(self.train_set), self.max_iter,
                 self.iters_per_epoch, cfg.batch_size, self.dist.world_size, self.base_lr, warmup, steps,
                 self.grad_clip, self.amp, self.device)

    # -- helpers ---------------------------------------------------------------------------------------
    def _divergence_fix(self) -> str:
        """The options that help a diverged run, most likely first."""
        tips = []
        if self.random_init:
            tips.append("a randomly initialised backbone has no BatchNorm statistics: pass --backbone-weights "
                        "(torchvision ImageNet state dict) or --recalibrate-bn 4 to re-estimate them first")
        tips.append(f"lower --lr (now {self.base_lr:.4g})")
        tips.append("raise --warmup-iters")
        if self.grad_clip is None:
            tips.append("set --grad-clip 35 (RefineMask's value)")
        return "; ".join(tips)

    def _train_record(self, iteration: int) -> dict[str, Any]:
        """The ``run.train`` block (reports/protocol.py): what was trained on, how long, from which weights."""
        from eval.io import sha256_file
        from eval.output import KNOWN_SPLITS

        if not hasattr(self, "_backbone_record"):
            bw = self.cfg.backbone_weights
            self._backbone_record = ("random" if bw is None
                                     else {"path": str(bw), "sha256": sha256_file(bw) if Path(bw).is_file() else None})
        n = self.train_set.num_source_images
        if self.cfg.train_image_ids is not None:
            name = f"{self.train_paths.json.name} ({n} selected images)"
        else:
            name = KNOWN_SPLITS.get(Path(self.train_paths.json).name, Path(self.train_paths.json).stem)
        return {"name": name, "json": str(self.train_paths.json), "images": n, "iterations": int(iteration),
                "total_batch": int(self.total_batch),
                # passes over the images actually sampled (mmdet drops images without usable GT: 117,266 of COCO's)
                "epochs": round(iteration * self.total_batch / max(len(self.train_set), 1), 4),
                "schedule_epochs": self.preset.schedule.effective_epochs, "backbone_weights": self._backbone_record}

    def _recalibrate(self, indices: list[int]) -> None:
        n = self.cfg.bn_recalibration_batches
        order = indices[:: max(1, len(indices) // max(n * self.cfg.batch_size, 1))] or indices
        batches = []
        for b in range(n):
            chunk = [order[(b * self.cfg.batch_size + k) % len(order)] for k in range(self.cfg.batch_size)]
            batches.append([self.train_set[i][0] for i in chunk])
        k = recalibrate_bn(self.model, batches, self.device)
        log.info("re-estimated %d BatchNorm layers of the random-init backbone on %d batches", k, n)

    def _resume(self, resume: str | os.PathLike) -> None:
        path = self.work_dir / "latest.pth" if str(resume) == "auto" else Path(resume)
        if str(resume) == "auto" and not path.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {path}. Fix: start without --resume, or pass "
                                  f"--resume PATH/iter_N.pth")
        ckpt = load_checkpoint(path)
        if ckpt.get("format") != CHECKPOINT_FORMAT or "iter" not in ckpt:
            raise CheckpointError(f"{path} is not a training checkpoint of this harness (format "
                                  f"{ckpt.get('format')!r}). Fix: --resume needs latest.pth / iter_N.pth written "
                                  f"by `rmbench train`")
        check_preset(ckpt, self.preset.name, path, required=True)
        load_model_state(self.model, ckpt["model"], path)
        for key, obj in (("optimizer", self.optimizer), ("scheduler", self.scheduler)):
            try:
                obj.load_state_dict(ckpt[key])
            except (KeyError, ValueError, RuntimeError) as e:
                raise CheckpointError(f"{path}: cannot restore the {key} state ({e}). Fix: resume with the same "
                                      f"options the run was started with") from e
        self.lr_schedule = self.scheduler.lr_lambdas[0]
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_iter = int(ckpt["iter"])
        samp = ckpt.get("sampler", {})
        if samp and (samp.get("batch_size"), samp.get("world_size")) != (self.cfg.batch_size, self.dist.world_size):
            log.warning("%s was written with batch %s x %s processes, now %d x %d: the data order after resuming "
                        "differs from an uninterrupted run", path, samp.get("batch_size"), samp.get("world_size"),
                        self.cfg.batch_size, self.dist.world_size)
        self.sampler_seed = int(samp.get("seed", self.cfg.seed))
        rngs = ckpt.get("rng") or []
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            log.warning("%s holds RNG states of %d processes, this run has %d: reseeding (not bit-exact)",
                        path, len(rngs), self.dist.world_size)
            seed_all(self.cfg.seed + self.dist.rank + self.start_iter)
        self.resumed_from = str(path)
        log.info("resumed from %s at iteration %d", path, self.start_iter)

    def _loader(self) -> DataLoader:
        g = torch.Generator()
        g.manual_seed(self.cfg.seed + self.dist.rank)  # the loader must not draw from the global RNG
        w = self.cfg.num_workers
        return DataLoader(self.train_set, batch_sampler=self.sampler, num_workers=w, collate_fn=collate,
                          pin_memory=self.device.type == "cuda", generator=g, persistent_workers=w > 0,
                          prefetch_factor=2 if w > 0 else None)

    def checkpoint_state(self, iteration: int) -> dict[str, Any]:
        """The checkpoint dict after ``iteration`` completed iterations (collective: call on every rank)."""
        rngs = du.all_gather_object(get_rng_state())
        return {
            "format": CHECKPOINT_FORMAT,
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp else {},
            "iter": int(iteration),
            "epoch": int(iteration // self.iters_per_epoch),
            "sampler": self.sampler.state(iteration),
            "rng": rngs,
            "preset": self.preset.name,
            "classes": list(self.train_set.cat_ids),
            "class_names": list(self.train_set.class_names),
            "run": _plain({**self.run, "train": self._train_record(iteration)}),
            "config": self.cfg.to_plain(),
        }

    def save_checkpoint(self, iteration: int) -> Path | None:
        """Write ``iter_N.pth`` and ``latest.pth`` atomically on rank 0 (collective)."""
        state = self.checkpoint_state(iteration)
        if not self.is_main:
            return None
        path = atomic_torch_save(state, self.work_dir / f"iter_{iteration}.pth")
        atomic_copy(path, self.work_dir / "latest.pth", link=True)
        if self.cfg.keep_checkpoints > 0:
            olds = sorted(self.work_dir.glob("iter_*.pth"), key=lambda q: int(q.stem.split("_")[1]))
            for q in olds[: -self.cfg.keep_checkpoints]:
                q.unlink(missing_ok=True)
        log.info("saved checkpoint %s", path)
        return path

    def evaluate(self, iteration: int) -> dict | None:
        """Sharded inference on the val set, evaluation on rank 0 (collective). Training RNG is untouched."""
        if self.val_set is None:
            return None
        py, npy = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            results = inference_on_dataset(self.model, self.val_set, device=self.device,
                                           num_workers=min(self.cfg.num_workers, 2), amp=self.amp,
                                           progress=self.cfg.progress)
        random.setstate(py)
        np.random.set_state(npy)
        metrics = None
        if self.is_main:
            from eval.io import write_json

            out = self.work_dir / "eval" / f"iter_{iteration}"
            write_json(out / "results.json", results)
            run = {**self.run, "iteration": iteration, "checkpoint": str(self.work_dir / f"iter_{iteration}.pth"),
                   "train": self._train_record(iteration)}
            metrics = evaluate_results(results, self.val_paths.json, out, run=run, metrics=self.cfg.eval_metrics,
                                       inputs={"results": out / "results.json"},
                                       params={"train": self.cfg.to_plain()}, device=str(self.device))
            for name in ("metrics.json", "metrics.md"):
                atomic_copy(out / name, self.work_dir / name)
            flat = {f"{g}/{k}": v for g, vals in metrics.items() for k, v in vals.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if self._tb is not None:
                for k, v in flat.items():
                    self._tb.add_scalar(f"eval/{k}", v, iteration)
                self._tb.flush()
            log.info("evaluation at iteration %d: %s", iteration,
                     ", ".join(f"{k} {v:.4f}" for k, v in flat.items() if "/AP" in k or "/F" in k))
        du.barrier()
        return metrics

    # -- logging -----------------------------------------------------------------------------------------
    def _log_row(self, row: dict[str, Any]) -> None:
        path = self.work_dir / "log.csv"
        new = not path.exists() or path.stat().st_size == 0
        if new or self._csv_fields is None:
            if not new:
                with open(path, newline="") as f:
                    self._csv_fields = next(csv.reader(f), None)
            if new or not self._csv_fields:
                self._csv_fields = list(row)
                with open(path, "w", newline="") as f:
                    csv.DictWriter(f, fieldnames=self._csv_fields).writeheader()
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._csv_fields, extrasaction="ignore").writerow(row)
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("iter", "epoch") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"train/{k}", v, row["iter"])

    def _truncate_log(self) -> None:
        """On resume, drop log rows beyond the checkpoint's iteration (they will be recomputed)."""
        path = self.work_dir / "log.csv"
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            fields = list(rows[0].keys()) if rows else None
        if fields is None:
            return
        from eval.io import atomic_write

        with atomic_write(path) as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(r for r in rows if int(r["iter"]) <= self.start_iter)

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict[str, Any]:
        """Run iterations ``start_iter + 1 … max_iter``. Returns a summary (last losses, metrics, checkpoint).

        Args:
            until: stop after this iteration (a checkpoint is written there) although the schedule spans
                ``max_iter``; continue later with ``resume="auto"`` (time-sliced or pre-emptible jobs).

        Raises:
            DivergedError: a non-finite loss (names the iteration, the loss terms and the options that help).
        """
        cfg = self.cfg
        self._csv_fields = None
        self._tb = None
        if self.is_main:
            from eval.io import write_json

            write_json(self.work_dir / "config.json", {"options": cfg.to_plain(), "preset": _plain(self.preset),
                                                       "run": self.run, "world_size": self.dist.world_size,
                                                       "max_iter": self.max_iter,
                                                       "iters_per_epoch": self.iters_per_epoch})
            if self.start_iter:
                self._truncate_log()
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.work_dir / "tb"), purge_step=self.start_iter + 1)
        model = self.model
        model.train()
        last: dict[str, float] = {}
        metrics = None
        it = self.start_iter
        stop = self.max_iter if until is None else min(int(until), self.max_iter)
        if it >= self.max_iter:
            log.info("checkpoint is already at iteration %d of %d: nothing to train", it, self.max_iter)
        loader_iter = iter(self._loader())
        bar = tqdm(total=self.max_iter, initial=it, desc="train", disable=not (cfg.progress and self.is_main),
                   dynamic_ncols=True)
        t_start = time.perf_counter()
        try:
            while it < stop:
                t0 = time.perf_counter()
                images, targets = next(loader_iter)
                t_data = time.perf_counter() - t0
                images = [im.to(self.device, non_blocking=True) for im in images]
                targets = [{k: t[k].to(self.device, non_blocking=True) for k in TARGET_KEYS if k in t}
                           for t in targets]
                lr = self.optimizer.param_groups[0]["lr"]
                with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
                    loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
                values = du.reduce_mean_dict({**loss_dict, "loss": loss})
                if not all(math.isfinite(v) for v in values.values()):
                    raise DivergedError(f"non-finite loss at iteration {it + 1}: "
                                        + ", ".join(f"{k}={v}" for k, v in values.items())
                                        + ". Fix: " + self._divergence_fix())
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                grad_norm = None
                if self.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    grad_norm = float(nn.utils.clip_grad_norm_(self.params, self.grad_clip))
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                it += 1
                last = values
                dt = time.perf_counter() - t0
                bar.update(1)
                if it % max(cfg.log_interval, 1) == 0 or it == stop or it == self.start_iter + 1:
                    if self.is_main:
                        row = {"iter": it, "epoch": (it - 1) // self.iters_per_epoch, "lr": lr,
                               **{k: values[k] for k in sorted(values)}, "grad_norm": grad_norm,
                               "data_time": t_data, "time": dt}
                        self._log_row(row)
                        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.3g}")
                        eta = (time.perf_counter() - t_start) / (it - self.start_iter) * (self.max_iter - it)
                        log.info("iter %d/%d  lr %.4g  loss %.4f (%s)  %.2f s/it  eta %s", it, self.max_iter, lr,
                                 values["loss"], ", ".join(f"{k} {v:.3f}" for k, v in sorted(values.items())
                                                            if k != "loss"), dt, _fmt_eta(eta))
                if it % self.checkpoint_interval == 0 or it == self.max_iter or it == stop:
                    self.save_checkpoint(it)
                if self.val_set is not None and self.eval_interval >= 0 and (
                        (self.eval_interval > 0 and it % self.eval_interval == 0) or it == self.max_iter):
                    metrics = self.evaluate(it)
                    model.train()
        finally:
            bar.close()
            if self._tb is not None:
                self._tb.close()
        return {"iter": it, "losses": last, "metrics": metrics,
                "checkpoint": str(self.work_dir / "latest.pth") if self.is_main else None,
                "time_s": time.perf_counter() - t_start}


def _fmt_eta(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Build a :class:`Trainer` and run it (the ``rmbench train`` entry point)."""
    return Trainer(cfg).train()
