"""The paper's plots from our files (matplotlib, Agg; every plot written as PNG and SVG, atomically).

- :func:`plot_boundary_accuracy` — Fig. 1: boundary vs non-boundary accuracy per method (+ the paper's values);
- :func:`plot_qualitative` — Fig. 6: image, each method's masks, ground truth, for chosen images;
- :func:`plot_boundary_regions` — Fig. 7: boundary regions from the convolution (appendix A.1) and from the
  distance definition (Eq. 1), side by side;
- :func:`plot_boundary_f_vs_tolerance` — boundary F versus pixel tolerance per method (+ Table 14's F_1px/F_3px);
- :func:`plot_ap_vs_mask_size` — AP/AP* versus mask output size: Table 3 (paper, and ours when the stage presets
  ran) and the mask-resolution ceiling on one plot.

Every function takes plain data (dicts, arrays) and an output stem ``path/name``; it writes ``name.png`` and
``name.svg`` and returns both paths. :func:`demo_plots` draws them all from a ``rmbench demo`` folder. Figures are
built with :class:`matplotlib.figure.Figure` (no pyplot state), so they never open a window or change a
notebook's backend.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from eval.errors import MissingFileError, UsageError
from eval.io import atomic_write

#: the paper's Fig. 1 (COCO; boundary / non-boundary accuracy, fractions)
PAPER_FIG1 = {"Mask R-CNN": {"boundary": 0.675, "non_boundary": 0.944},
              "DeepLabV3+": {"boundary": 0.738, "non_boundary": 0.929},
              "RefineMask": {"boundary": 0.725, "non_boundary": 0.951}}

#: the Table 3 presets by mask output size (28 × 2^(stages−1))
STAGE_PRESETS = {28: "refinemask_r50_fpn_1x_coco_stages1", 56: "refinemask_r50_fpn_1x_coco_stages2",
                 112: "refinemask_r50_fpn_1x_coco", 224: "refinemask_r50_fpn_1x_coco_stages4"}

FORMATS = ("png", "svg")

#: one colour per method (or series) in every figure: a method keeps its colour from Fig. 1 to the F curves
SERIES_COLORS = {
    "Mask R-CNN": "tab:blue", "RefineMask": "tab:orange", "PointRend": "tab:green", "HTC": "tab:red",
    "DeepLabV3+": "tab:purple", "prediction set A": "tab:gray", "perfect 28×28 head": "tab:olive",
    "perfect 112×112 head": "tab:cyan",
}
#: what a non-method series is, for legends (the bundled predictions and the resampled-GT heads are no models)
SERIES_LABELS = {
    "prediction set A": "prediction set A (bundled test predictions, not a trained model)",
    "perfect 28×28 head": "perfect 28×28 head (GT resampled to 28×28: an upper bound, no model)",
    "perfect 112×112 head": "perfect 112×112 head (GT resampled to 112×112: an upper bound, no model)",
}
_PRESET_METHODS = (("mask_rcnn", "Mask R-CNN"), ("refinemask", "RefineMask"), ("point_rend", "PointRend"),
                   ("htc", "HTC"))
_EXTRA_COLORS = ("tab:brown", "tab:pink", "black", "gold", "teal", "navy")


def series_method(name: str) -> str:
    """The method a series belongs to: a known series name, a method name with a suffix ("RefineMask R50 (paper)"),
    or a preset name (``refinemask_r50_fpn_1x_coco`` → RefineMask); else the name itself."""
    base = name.replace("\n", " ")
    for known in SERIES_COLORS:
        if base == known or base.startswith(known + " "):
            return known
    for prefix, method in _PRESET_METHODS:
        if base.startswith(prefix):
            return method
    return base


def series_color(name: str) -> str:
    """The colour of a series: its method's (:data:`SERIES_COLORS`), else a stable colour from its name."""
    method = series_method(name)
    if method in SERIES_COLORS:
        return SERIES_COLORS[method]
    return _EXTRA_COLORS[sum(map(ord, method)) % len(_EXTRA_COLORS)]


def series_label(name: str) -> str:
    """The legend text of a series (:data:`SERIES_LABELS` says what the non-model series are)."""
    return SERIES_LABELS.get(name, name)


def save_figure(fig: Figure, stem: str | os.PathLike, dpi: int = 120) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` atomically; return the paths.

    SVGs carry no date, so the same data gives the same file.
    """
    stem = Path(stem)
    paths = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        meta = {"Date": None} if fmt == "svg" else {}
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta, bbox_inches="tight")
        p = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_write(p, "wb") as f:
            f.write(buf.getvalue())
        paths.append(p)
    return paths


# --------------------------------------------------------------------------------------------------
# Fig. 1


def plot_boundary_accuracy(values: dict[str, dict[str, float]], stem: str | os.PathLike,
                           paper: dict[str, dict[str, float]] | None = PAPER_FIG1) -> list[Path]:
    """Fig. 1: boundary and non-boundary accuracy per method, as grouped bars (percent).

    Args:
        values: {method: {"boundary": fraction, "non_boundary": fraction}} (metrics.json ``boundary_acc``).
        stem: output path without extension.
        paper: the paper's Fig. 1 values, drawn hatched after ours (None: leave out).
    """
    items = [(m, v, False) for m, v in values.items()] + [(f"{m}\n(paper)", v, True) for m, v in (paper or {}).items()]
    if not items:
        raise UsageError("no method to plot: give at least one {method: {boundary, non_boundary}}")
    from matplotlib.patches import Patch

    fig = Figure(figsize=(max(5.5, 1.3 * len(items) + 1.5), 4.2))
    ax = fig.subplots()
    x = np.arange(len(items))
    colors = [series_color(m) for m, _, _ in items]
    for off, key, alpha in ((-0.19, "boundary", 1.0), (0.19, "non_boundary", 0.45)):
        vals = [100 * _num(v.get(key)) for _, v, _ in items]
        bars = ax.bar(x + off, vals, 0.38, color=colors, alpha=alpha, edgecolor=colors)
        for b, (_, _, is_paper), val in zip(bars, items, vals):
            if is_paper:  # white hatching shows on both the solid and the light bar
                b.set_hatch("//")
                b.set_edgecolor("white")
            if not math.isnan(val):
                ax.text(b.get_x() + b.get_width() / 2, val + 0.8, f"{val:.1f}", ha="center", fontsize=7)
    ax.set_xticks(x, [m for m, _, _ in items], fontsize=8)
    ax.set_ylim(0, 118)
    ax.set_ylabel("pixel accuracy (%)")
    ax.set_title("Boundary vs non-boundary accuracy (paper Fig. 1)", fontsize=10)
    handles = [Patch(facecolor="0.3", label="boundary (left bar)"),
               Patch(facecolor="0.3", alpha=0.45, label="non-boundary (right bar)")]
    if paper:
        handles.append(Patch(facecolor="0.3", edgecolor="white", hatch="//", label="the paper's values"))
    described = [m for m, _, is_paper in items if not is_paper and m in SERIES_LABELS]
    handles += [Patch(facecolor=series_color(m), label=series_label(m)) for m in described]
    ax.legend(handles=handles, loc="upper center", ncol=2, fontsize=7, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, stem)


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


# --------------------------------------------------------------------------------------------------
# Fig. 6


#: instance colours of Fig. 6 (RGB); a GT instance keeps its colour in every row, unmatched predictions are grey
INSTANCE_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                    (227, 119, 194), (188, 189, 34), (23, 190, 207)]
UNMATCHED_COLOR = (160, 160, 160)


def _overlay(img: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.4,
             colors: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Masks as translucent fills with solid contours (the contours show boundary quality); ``colors[k]`` is mask
    k's RGB colour (default: the palette in order)."""
    import cv2

    out = img.astype(np.float32).copy()
    thick = max(1, round(max(img.shape[:2]) / 250))
    contours = []
    for k, m in enumerate(masks):
        rgb = colors[k] if colors is not None else INSTANCE_PALETTE[k % len(INSTANCE_PALETTE)]
        c = np.array(rgb, dtype=np.float32)
        sel = m.astype(bool)
        out[sel] = (1 - alpha) * out[sel] + alpha * c
        cs, _ = cv2.findContours(sel.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contours.append((cs, tuple(int(v) for v in c)))
    out = np.ascontiguousarray(out.clip(0, 255).astype(np.uint8))
    for cs, color in contours:
        cv2.drawContours(out, cs, -1, color, thick)
    return out


def plot_qualitative(gt: dict, images_dir: str | os.PathLike, results: dict[str, list[dict]],
                     image_ids: Sequence[int], stem: str | os.PathLike, score_thr: float = 0.5) -> list[Path]:
    """Fig. 6: one column per image; rows: each method's masks (score ≥ ``score_thr``), then the ground truth.

    Args:
        gt: COCO ground truth (``images`` with ``file_name``, height, width; ``annotations``).
        images_dir: folder holding the images' ``file_name``.
        results: {method: COCO results list (RLE or polygon ``segmentation``)}.
        image_ids: the images to show (one column each).
        stem: output path without extension.
        score_thr: a prediction is drawn if its score is at least this.

    Raises:
        ValueError: an image id is not in ``gt``; FileNotFoundError: an image file is missing.
    """
    import cv2

    from eval.masks import rle_to_mask, segm_to_rle

    imgs = {im["id"]: im for im in gt["images"]}
    unknown = [i for i in image_ids if i not in imgs]
    if unknown or not image_ids:
        raise UsageError(f"image ids {unknown or list(image_ids)} are not in the ground truth (give existing ids)")
    rows = [*results, "ground truth"]
    fig = Figure(figsize=(3.2 * len(image_ids), 2.6 * (len(rows) + 1)))
    axes = np.asarray(fig.subplots(len(rows) + 1, len(image_ids), squeeze=False))
    for j, iid in enumerate(image_ids):
        im = imgs[iid]
        path = Path(images_dir) / im["file_name"]
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise MissingFileError(f"{path}: image missing or unreadable; pass the folder holding "
                                    f"{im['file_name']} as images_dir")
        rgb = bgr[:, :, ::-1]
        h, w = int(im["height"]), int(im["width"])
        gt_masks = [rle_to_mask(segm_to_rle(a["segmentation"], h, w)) for a in gt["annotations"]
                    if a["image_id"] == iid and not a.get("iscrowd", 0)]
        gt_colors = [INSTANCE_PALETTE[k % len(INSTANCE_PALETTE)] for k in range(len(gt_masks))]
        layers: dict[str, tuple[list, list]] = {"image": ([], [])}
        for method, res in results.items():
            masks = [rle_to_mask(segm_to_rle(r["segmentation"], h, w)) for r in res
                     if r["image_id"] == iid and r.get("score", 1.0) >= score_thr]
            layers[method] = (masks, [_instance_color(m, gt_masks, gt_colors) for m in masks])
        layers["ground truth"] = (gt_masks, gt_colors)
        for i, (name, (masks, colors)) in enumerate(layers.items()):
            ax = axes[i, j]
            ax.imshow(_overlay(rgb, masks, colors=colors) if masks else rgb)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
            if i == 0:
                ax.set_title(f"image {iid}", fontsize=9)
    fig.suptitle("Qualitative results (paper Fig. 6): an object has one colour in every row (its GT instance's); "
                 "grey = a prediction that matches no GT (mask IoU < 0.5)", fontsize=9)
    return save_figure(fig, stem, dpi=100)


def _instance_color(mask: np.ndarray, gt_masks: Sequence[np.ndarray],
                    gt_colors: Sequence[tuple[int, int, int]]) -> tuple[int, int, int]:
    """The colour of the GT instance a predicted mask overlaps most (mask IoU ≥ 0.5), else grey."""
    m = mask.astype(bool)
    best, best_iou = None, 0.5
    for k, g in enumerate(gt_masks):
        g = g.astype(bool)
        union = np.count_nonzero(m | g)
        iou = np.count_nonzero(m & g) / union if union else 0.0
        if iou >= best_iou:
            best, best_iou = k, iou
    return gt_colors[best] if best is not None else UNMATCHED_COLOR


def largest_object_images(gt: dict, k: int = 3) -> list[int]:
    """The ``k`` image ids whose largest non-crowd object is largest (a deterministic Fig. 6 choice)."""
    best: dict[int, float] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            best[a["image_id"]] = max(best.get(a["image_id"], 0.0), float(a["area"]))
    return [i for i, _ in sorted(best.items(), key=lambda t: (-t[1], t[0]))[:k]]


# --------------------------------------------------------------------------------------------------
# Fig. 7


def plot_boundary_regions(masks: Sequence[np.ndarray], stem: str | os.PathLike, width: int = 1,
                          variant: str = "primary") -> list[Path]:
    """Fig. 7: per mask, the convolution boundary region (top row) and the Eq. 1 distance region (bottom row).

    Args:
        masks: binary masks (S, S), e.g. GT masks resized to a mask-head output size.
        stem: output path without extension.
        width: the boundary width d̂ = w in pixels (the paper: 1 at inference, 2 in training).
        variant: the border conventions, a key of ``eval.region_study.VARIANTS``.
    """
    from eval.boundary import conv_boundary_region, distance_boundary_region, region_iou
    from eval.region_study import VARIANTS

    if not masks:
        raise UsageError("no mask to plot")
    p = VARIANTS[variant]
    fig = Figure(figsize=(2.2 * len(masks), 4.8))
    axes = np.asarray(fig.subplots(2, len(masks), squeeze=False))
    for j, m in enumerate(masks):
        m = np.asarray(m).astype(bool)
        conv = conv_boundary_region(m, width, threshold=p["threshold"], invert_then_pad=p["invert_then_pad"])
        dist = distance_boundary_region(m, width, frame=p["frame"], half_pixel_contour=p["half_pixel_contour"])
        for i, (region, name) in enumerate(((conv, "convolution (A.1)"), (dist, "distance (Eq. 1)"))):
            rgb = np.full((*m.shape, 3), 255, np.uint8)
            rgb[m] = (200, 200, 200)
            rgb[region] = (214, 39, 40)
            ax = axes[i, j]
            ax.imshow(rgb, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
        axes[0, j].set_title(f"{m.shape[0]}×{m.shape[1]}, IoU {region_iou(conv, dist):.2f}", fontsize=8)
    fig.suptitle(f"Boundary regions, d̂ = {width} px (paper Fig. 7; red = boundary, grey = mask)", fontsize=10)
    return save_figure(fig, stem)


def table12_masks(gt: dict, k: int = 6, size: int = 56, seed: int = 2021) -> list[np.ndarray]:
    """``k`` GT masks resized to ``size``×``size`` exactly as the Table 12 study selects and resizes them."""
    from eval.region_study import select_table12_masks

    return [s["masks"][size] for s in select_table12_masks(gt, (size,), k, seed)]


# --------------------------------------------------------------------------------------------------
# Boundary F vs tolerance


def boundary_f_curve(boundary_f: dict[str, Any]) -> dict[int, float]:
    """{n: F_npx} from a metrics.json ``boundary_f`` group (keys ``F1px``, ``F3px``, …)."""
    out = {}
    for k, v in boundary_f.items():
        m = re.fullmatch(r"F(\d+)px", k)
        if m and v is not None:
            out[int(m.group(1))] = float(v)
    return dict(sorted(out.items()))


def plot_boundary_f_vs_tolerance(curves: dict[str, dict[int, float]], stem: str | os.PathLike,
                                 paper: bool = True) -> list[Path]:
    """Boundary F (percent) versus the pixel tolerance n, one line per method.

    Args:
        curves: {method: {n: F_npx as a fraction}} (see :func:`boundary_f_curve`).
        stem: output path without extension.
        paper: also draw the paper's Table 14 F_1px / F_3px (hollow markers, dashed).
    """
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for method, c in curves.items():
        if c:
            ax.plot(list(c), [100 * v for v in c.values()], "o-", color=series_color(method),
                    label=series_label(method))
    if paper:
        from .tables import load_paper_table

        df = load_paper_table(14)
        for _, r in df[df["kind"] == "result"].iterrows():
            name = f"{r['Model']} {r['Backbone']} (paper)"
            ax.plot([1, 3], [float(r["F_1px"]), float(r["F_3px"])], "o--", mfc="none", color=series_color(name),
                    label=name)
    ns = sorted({n for c in curves.values() for n in c} | ({1, 3} if paper else set()))
    if not ns:
        raise UsageError("no boundary F value to plot")
    ax.set_xticks(ns)
    ax.set_xlabel("tolerance n (pixels)")
    ax.set_ylabel("boundary F (%)")
    ax.set_title("Boundary F versus pixel tolerance (appendix A.2)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, stem)


# --------------------------------------------------------------------------------------------------
# The mask-resolution ceiling


def plot_ceiling(rows: Sequence[dict], stem: str | os.PathLike) -> list[Path]:
    """AP, AP*, F_1px, F_3px (percent) of GT masks resampled to S×S versus S (``eval.ceiling`` rows), log2 axis."""
    if not rows:
        raise UsageError("no ceiling rows to plot")
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    sizes = [int(r["S"]) for r in rows]
    for k, style in (("AP", "o-"), ("AP*", "s-"), ("F1px", "^-"), ("F3px", "v-")):
        if k in rows[0]:
            ax.plot(sizes, [100 * _num(r.get(k)) for r in rows], style, label=k)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(x) for x in sizes])
    ax.set_xlabel("mask output size S (pixels)")
    ax.set_ylabel("score (%)")
    ax.set_title("Mask-resolution ceiling (resampled GT masks)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, stem)


# --------------------------------------------------------------------------------------------------
# AP / AP* vs mask output size


def plot_ap_vs_mask_size(ceiling_rows: Sequence[dict] | None, stem: str | os.PathLike,
                         ours: dict[int, dict[str, float | None]] | None = None) -> list[Path]:
    """AP and AP* (percent) versus the mask output size S, log2 axes, in two panels with their own scales: left, the
    trained models of Table 3 (the paper's, and ours when given); right, the resolution ceiling (GT resampled to
    S×S, an upper bound: its 85-100 % would flatten Table 3's 36-41 % on one axis).

    Args:
        ceiling_rows: ``eval.ceiling.mask_resolution_ceiling`` rows ({S, AP, AP*, ...}; None: the right panel says
            how to make them).
        stem: output path without extension.
        ours: {S: {"AP": fraction, "AP*": fraction}} from our Table 3 runs (see :func:`table3_runs`).
    """
    from .tables import paper_values

    fig = Figure(figsize=(10.0, 4.0))
    left, right = fig.subplots(1, 2)
    t3 = paper_values(3)
    sizes3 = [28, 56, 112, 224]
    color = series_color("RefineMask")
    left.plot(sizes3, t3["AP"].tolist(), "o--", color=color, mfc="none", label="AP, RefineMask Table 3 (paper)")
    left.plot(sizes3, t3["AP*"].tolist(), "s--", color=color, mfc="none", alpha=0.6,
              label="AP*, RefineMask Table 3 (paper)")
    if ours:
        s_ = sorted(ours)
        for key, marker, alpha in (("AP", "o-", 1.0), ("AP*", "s-", 0.6)):
            ys = [100 * _num(ours[k].get(key)) for k in s_]
            if not all(math.isnan(y) for y in ys):
                left.plot(s_, ys, marker, color=color, alpha=alpha, label=f"{key}, RefineMask Table 3 (ours)")
    xs = sorted(set(sizes3) | set(ours or {}))
    left.set_xscale("log", base=2)
    left.set_xticks(xs, [str(x) for x in xs])
    left.set_xlabel("mask output size S (pixels)")
    left.set_ylabel("AP (%)")
    left.set_title("Trained models (Table 3)", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    if ceiling_rows:
        cs = [int(r["S"]) for r in ceiling_rows]
        gray = "0.35"
        right.plot(cs, [100 * _num(r.get("AP")) for r in ceiling_rows], "o:", color=gray, label="AP")
        if any(r.get("AP*") is not None for r in ceiling_rows):
            right.plot(cs, [100 * _num(r.get("AP*")) for r in ceiling_rows], "s:", color=gray, alpha=0.6,
                       label="AP*")
        right.set_xscale("log", base=2)
        right.set_xticks(cs, [str(x) for x in cs])
        right.legend(fontsize=7)
    else:
        right.text(0.5, 0.5, "no ceiling rows\n(run `rmbench demo`)", ha="center", va="center",
                   transform=right.transAxes)
    right.set_xlabel("mask output size S (pixels)")
    right.set_ylabel("AP (%)")
    right.set_title("Resolution ceiling: GT resampled to S×S (upper bound, no model)", fontsize=10)
    right.grid(alpha=0.3)
    fig.suptitle("AP / AP* versus mask output size", fontsize=11)
    return save_figure(fig, stem)


def table3_runs(runs: Any) -> dict[int, dict[str, float | None]]:
    """{S: {"AP", "AP*"}} from a ``reports.tables.RunSet`` holding the Table 3 stage presets."""
    from .tables import load_paper_table, row_names

    out: dict[int, dict[str, float | None]] = {}
    df = load_paper_table(3)
    for _, r in df.iterrows():
        run = runs.find(row_names(r))
        if run is not None:
            size = int(re.match(r"(\d+)", r["Output size"]).group(1))
            out[size] = {"AP": run.value("coco", "AP"), "AP*": run.value("ap_star", "AP")}
    return out


# --------------------------------------------------------------------------------------------------
# Everything from runs / from the demo


def plots_from_runs(runs: Any, out_dir: str | os.PathLike, ceiling_rows: Sequence[dict] | None = None) -> list[Path]:
    """The plots a ``RunSet`` allows: Fig. 1 (runs with ``boundary_acc``), boundary F vs tolerance (runs with
    ``boundary_f``), AP/AP* vs mask size (always: the paper's Table 3, plus ours and the ceiling when given)."""
    out = Path(out_dir)
    paths: list[Path] = []
    acc = {n: r.metrics["boundary_acc"] for n, r in runs.runs.items() if "boundary_acc" in r.metrics}
    paths += plot_boundary_accuracy(acc, out / "fig1_boundary_accuracy")
    curves = {n: boundary_f_curve(r.metrics["boundary_f"]) for n, r in runs.runs.items() if "boundary_f" in r.metrics}
    paths += plot_boundary_f_vs_tolerance(curves, out / "boundary_f_vs_tolerance")
    paths += plot_ap_vs_mask_size(ceiling_rows, out / "ap_vs_mask_size", table3_runs(runs))
    return paths


def demo_plots(demo_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               image_ids: Iterable[int] | None = None) -> list[Path]:
    """Every plot from a ``rmbench demo`` folder (eval/metrics.json, ceiling.json) and the bundled data.

    Writes ``<out_dir>/`` (default ``<demo_dir>/plots``): fig1_boundary_accuracy, fig6_qualitative,
    fig7_boundary_regions, boundary_f_vs_tolerance, ap_vs_mask_size (.png and .svg each).
    """
    from eval.ceiling import resampled_results
    from eval.io import load_gt, load_json
    from eval.paths import bundled

    from .tables import load_metrics

    demo = Path(demo_dir)
    out = Path(out_dir) if out_dir is not None else demo / "plots"
    ev = load_metrics(demo / "eval" / "metrics.json").metrics
    ceiling = load_json(demo / "ceiling.json", "ceiling.json")["rows"]
    gt = load_gt(bundled("coco_mini", "annotations", "instances_val2017.json"))
    paths = plot_boundary_accuracy({"prediction set A": ev["boundary_acc"]}, out / "fig1_boundary_accuracy")
    curves = {"prediction set A": boundary_f_curve(ev["boundary_f"])}
    for r in ceiling:
        if int(r["S"]) in (28, 112):
            curves[f"perfect {r['S']}×{r['S']} head"] = {n: r[f"F{n}px"] for n in (1, 3)
                                                          if r.get(f"F{n}px") is not None}
    paths += plot_boundary_f_vs_tolerance(curves, out / "boundary_f_vs_tolerance")
    paths += plot_ap_vs_mask_size(ceiling, out / "ap_vs_mask_size")
    paths += plot_boundary_regions(table12_masks(gt, 6, 56), out / "fig7_boundary_regions")
    ids = list(image_ids) if image_ids is not None else largest_object_images(gt, 3)
    sub = {**gt, "images": [im for im in gt["images"] if im["id"] in ids],
           "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    preds = [r for r in load_json(bundled("golden", "preds_A.json"), "results") if r["image_id"] in ids]
    paths += plot_qualitative(gt, bundled("coco_mini", "val2017"),
                              {"prediction set A": preds, "perfect 28×28 head": resampled_results(sub, 28)},
                              ids, out / "fig6_qualitative")
    return paths
