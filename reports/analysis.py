"""Pages and plots of ``rmbench analyze`` (analysis.json) and ``rmbench compare`` (compare.json).

Plain data in, files out: :func:`analysis_plots` draws the TIDE bars, the PR curves, the mask-IoU / F_1px
distributions and the worst-boundary gallery (PNG + SVG through :func:`reports.plots.save_figure`);
:func:`analysis_page` and :func:`compare_page` render the markdown (or standalone HTML) page. Values in the json are
fractions; pages show them ×100 (AP points), as the paper does.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from eval.errors import UsageError
from eval.masks import rle_to_mask, segm_to_rle

from .plots import save_figure
from .tables import html_page

__all__ = ["analysis_plots", "analysis_page", "compare_page", "plot_gallery", "fmt_points"]

_TIDE_ORDER = ("cls", "loc", "both", "dupe", "bkg", "missed")
_TIDE_LABELS = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "missed": "Missed"}


def fmt_points(v: Any, signed: bool = False, decimals: int = 1) -> str:
    """A fraction as AP points (×100) with ``decimals``; "—" for None/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    s = f"{100 * float(v):+.{decimals}f}" if signed else f"{100 * float(v):.{decimals}f}"
    return s


# -- plots ------------------------------------------------------------------------------------------------------------
def plot_tide(tide: dict, stem) -> list[Path]:
    """Bar chart of TIDE's ΔAP per bin (``analysis["tide"]``, fractions shown as points) to ``stem.png/.svg``."""
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    vals = [100 * tide["delta"][b] for b in _TIDE_ORDER]
    ax.bar([_TIDE_LABELS[b] for b in _TIDE_ORDER], vals, color="tab:red")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("ΔAP when fixed (points)")
    ax.set_title(f"TIDE on mask AP (baseline {100 * tide['baseline_ap']:.1f}; t_f={tide['t_f']}, t_b={tide['t_b']})",
                 fontsize=9)
    return save_figure(fig, stem)


def plot_pr_curves(pr: dict, stem) -> list[Path]:
    """``analysis["pr_curves"]``: precision vs the 101 recall points per IoU threshold and per area range."""
    fig = Figure(figsize=(10, 4))
    recall = np.asarray(pr["recall"])
    ax = fig.add_subplot(1, 2, 1)
    for t, curve in pr["by_iou"].items():
        if t in ("0.50", "0.75", "0.95") or float(t) in (0.6, 0.7, 0.8, 0.9):
            y = np.asarray([np.nan if v is None else v for v in curve])
            ax.plot(recall, y, label=f"IoU {t}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (mean over categories)")
    ax.set_title("mask PR curves by IoU threshold (area all)", fontsize=9)
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    for a, curve in pr["by_area"].items():
        ax2.plot(recall, np.asarray([np.nan if v is None else v for v in curve]), label=a)
    ax2.set_xlabel("recall")
    ax2.set_title("by area range (mean over IoU 0.50:0.95)", fontsize=9)
    ax2.legend(fontsize=7)
    for x in (ax, ax2):
        x.set_xlim(0, 1)
        x.set_ylim(0, 1.02)
    return save_figure(fig, stem)


def plot_distributions(dist: dict, stem) -> list[Path]:
    """``analysis["distributions"]``: mask IoU and F_1px histograms of the matched pairs, one bar per size class
    (fractions of that class's pairs)."""
    fig = Figure(figsize=(10, 3.6))
    for j, (key, label) in enumerate((("mask_iou", "mask IoU of matched pairs"), ("F1px", "F_1px of matched pairs"))):
        ax = fig.add_subplot(1, 2, j + 1)
        d = dist[key]
        edges = np.asarray(d["all"]["edges"])
        width = (edges[1] - edges[0]) / 4
        for i, s in enumerate(("small", "medium", "large")):
            counts = np.asarray(d[s]["counts"], dtype=float)
            frac = counts / counts.sum() if counts.sum() else counts
            ax.bar(edges[:-1] + width * (i + 0.5), frac, width=width, label=f"{s} (n={d[s]['n']})")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of pairs")
        ax.legend(fontsize=7)
    return save_figure(fig, stem)


def _crop_box(bbox, h: int, w: int, pad: float = 0.15) -> tuple[slice, slice]:
    x, y, bw, bh = bbox
    px, py = max(4, pad * bw), max(4, pad * bh)
    r0, r1 = max(0, int(y - py)), min(h, int(math.ceil(y + bh + py)))
    c0, c1 = max(0, int(x - px)), min(w, int(math.ceil(x + bw + px)))
    return slice(r0, max(r1, r0 + 1)), slice(c0, max(c1, c0 + 1))


def _contour(mask: np.ndarray) -> np.ndarray:
    import cv2

    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)) > 0


def plot_gallery(worst: list[dict], gt: dict, results: list[dict], stem, images_dir: str | os.PathLike | None = None,
                 ) -> list[Path]:
    """The worst-boundary instances: image crop, prediction, GT, both contours (green GT, red prediction).

    Args:
        worst: ``analysis["worst_boundary"]`` rows. gt: the ground truth. results: the validated results (indexed
            by ``pred_index``). images_dir: where ``file_name`` lives; without it (or a missing file) the crop is
            drawn on grey and the caption says so.
    """
    if not worst:
        raise UsageError("no matched pairs: there is no worst-boundary gallery to draw")
    import cv2

    ann = {a["id"]: a for a in gt["annotations"]}
    images = {im["id"]: im for im in gt["images"]}
    fig = Figure(figsize=(9, 2.3 * len(worst)))
    for i, row in enumerate(worst):
        im = images[row["image_id"]]
        h, w = im["height"], im["width"]
        gmask = rle_to_mask(segm_to_rle(ann[row["gt_id"]]["segmentation"], h, w)).astype(bool)
        pmask = rle_to_mask(segm_to_rle(results[row["pred_index"]]["segmentation"], h, w)).astype(bool)
        ys, xs = np.nonzero(gmask)
        bbox = row.get("gt_bbox") or [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        rs, cs = _crop_box(bbox, h, w)
        img, note = None, ""
        if images_dir is not None and im.get("file_name"):
            p = Path(images_dir) / im["file_name"]
            if p.is_file():
                bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if bgr is not None and bgr.shape[:2] == (h, w):
                    img = bgr[:, :, ::-1]
        if img is None:
            img, note = np.full((h, w, 3), 128, np.uint8), " (image not found: grey)"
        crop = img[rs, cs]
        both = crop.copy()
        both[_contour(gmask)[rs, cs]] = (0, 200, 0)
        both[_contour(pmask)[rs, cs]] = (230, 0, 0)
        panels = [(crop, f"{row['category']} #{row['gt_id']}{note}"),
                  (pmask[rs, cs], f"prediction (score {row['score']:.2f})"), (gmask[rs, cs], "ground truth"),
                  (both, f"F1px {row['F1px']:.2f}, IoU {row['mask_iou']:.2f}")]
        for j, (arr, title) in enumerate(panels):
            ax = fig.add_subplot(len(worst), 4, 4 * i + j + 1)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    return save_figure(fig, stem, dpi=100)


def analysis_plots(analysis: dict, out_dir, gt: dict | None = None, results: list[dict] | None = None,
                   images_dir=None) -> dict[str, list[Path]]:
    """Every plot of an analysis into ``out_dir`` (``tide``, ``pr_curves``, ``distributions``, ``worst_boundary``
    when ``gt`` and ``results`` are given). Returns name -> written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = {"tide": plot_tide(analysis["tide"], out_dir / "tide")}
    if analysis.get("pr_curves"):
        out["pr_curves"] = plot_pr_curves(analysis["pr_curves"], out_dir / "pr_curves")
    if analysis["distributions"]["mask_iou"]["all"]["n"]:
        out["distributions"] = plot_distributions(analysis["distributions"], out_dir / "distributions")
    if gt is not None and results is not None and analysis["worst_boundary"]:
        out["worst_boundary"] = plot_gallery(analysis["worst_boundary"], gt, results, out_dir / "worst_boundary",
                                             images_dir)
    return out


# -- pages -------------------------------------------------------------------------------------------------------------
def _render(blocks: list[tuple], fmt: str, title: str, fragment: bool = False) -> str:
    if fmt not in ("md", "html"):
        raise UsageError(f"format must be md or html, got {fmt!r}")
    parts = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            parts.append(f"{'#' * b[1]} {b[2]}\n" if fmt == "md" else f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
        elif kind == "p":
            parts.append(f"{b[1]}\n" if fmt == "md" else f"<p>{html.escape(b[1])}</p>")
        elif kind == "table":
            head, rows = b[1], b[2]
            if fmt == "md":
                lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
                lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
                parts.append("\n".join(lines) + "\n")
            else:
                th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
                trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                parts.append(f"<table class=\"rmbench-table\"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
        elif kind == "img":
            parts.append(f"![{b[2]}]({b[1]})\n" if fmt == "md" else
                         f"<figure><img src=\"{html.escape(b[1])}\" alt=\"{html.escape(b[2])}\">"
                         f"<figcaption>{html.escape(b[2])}</figcaption></figure>")
    body = "\n".join(parts)
    return body if fmt == "md" or fragment else html_page(title, body)


def analysis_page(analysis: dict, fmt: str = "md", plots: dict[str, str] | None = None, title: str = "Analysis",
                  max_categories: int = 15) -> str:
    """The analysis as a page: headline metrics, TIDE, good box / bad mask, per-size and worst-category tables, the
    plots (``plots``: name -> path relative to the page)."""
    plots = plots or {}
    m = analysis["metrics"]
    t = analysis["tide"]
    g = analysis["good_box_bad_mask"]
    blocks: list[tuple] = [("h", 1, title)]
    head = [("coco", "AP"), ("coco", "AP50"), ("coco", "AP75"), ("boundary_ap", "AP"), ("boundary_f", "F1px"),
            ("boundary_f", "F3px"), ("boundary_acc", "boundary")]
    blocks.append(("table", ["mask AP", "AP50", "AP75", "Boundary AP", "F_1px", "F_3px", "boundary acc."],
                   [[fmt_points(m.get(gr, {}).get(k)) for gr, k in head]]))
    blocks += [("h", 2, "Error decomposition (TIDE, mask AP)"),
               ("p", f"ΔAP (points) if every error of a bin were fixed; baseline {fmt_points(t['baseline_ap'])} "
                     f"= {t['ap']}; foreground IoU t_f = {t['t_f']}, background IoU t_b = {t['t_b']}; {t['library']} "
                     f"(segm kernel, strict parity). Removing every false positive: "
                     f"{fmt_points(t['delta_all_fp_removed'], True)}. vernier bins a detection whose box matches "
                     f"a GT by its box, so mask failures inside a correct box are not in these bins: see good box, "
                     f"bad mask below (docs/evaluation.md §16)."),
               ("table", [_TIDE_LABELS[b] for b in _TIDE_ORDER], [[fmt_points(t["delta"][b], True, 2)
                                                                    for b in _TIDE_ORDER]])]
    if "tide" in plots:
        blocks.append(("img", plots["tide"], "TIDE ΔAP per error bin"))
    frac = g.get("fraction_of_false_positives")
    blocks += [("h", 2, "Good box, bad mask"),
               ("p", f"{g['count']} of the {g['mask_false_positives']} mask false positives at IoU 0.5 "
                     f"({fmt_points(frac)} %) have a box with IoU ≥ {g.get('box_iou_thr', 0.5)} to a same-class GT "
                     f"box (boxes: {g.get('box_source', 'mask box')}) while the mask has IoU < 0.5 with that GT: "
                     f"the box found the object, the mask missed it. "
                     f"Fixing their masks: mask AP {fmt_points(g.get('ap'))} → {fmt_points(g.get('ap_fixed'))} "
                     f"(Δ {fmt_points(g.get('delta_ap'), True, 2)})."),
               ("table", ["small", "medium", "large"], [[g.get("by_size", {}).get(s, 0)
                                                         for s in ("small", "medium", "large")]])]
    blocks += [("h", 2, "By object size"),
               ("table", ["size", "GT", "matched", "mask AP", "Boundary AP", "F_1px"],
                [[r["size"], r["num_gt"], r["num_matched"], fmt_points(r["AP"]), fmt_points(r["boundary_AP"]),
                  fmt_points(r["F1px"])] for r in analysis["per_size"]])]
    if analysis.get("lvis_frequency"):
        lf = analysis["lvis_frequency"]
        blocks += [("h", 2, "LVIS frequency groups"),
                   ("table", ["group", "categories", "AP"], [[f, lf[f]["num_categories"], fmt_points(lf[f]["AP"])]
                                                              for f in "rcf"])]
    cats = analysis["per_category"][:max_categories]
    blocks += [("h", 2, f"Worst categories (lowest mask AP; {len(cats)} of {len(analysis['per_category'])})"),
               ("table", ["category", "GT", "matched", "mask AP", "Boundary AP", "F_1px"],
                [[r["name"], r["num_gt"], r["num_matched"], fmt_points(r["AP"]), fmt_points(r["boundary_AP"]),
                  fmt_points(r["F1px"])] for r in cats])]
    for name, cap in (("pr_curves", "precision-recall curves"),
                      ("distributions", "mask IoU and F_1px of matched pairs"),
                      ("worst_boundary", "lowest F_1px: crop, prediction, GT, contours (GT green, prediction red)")):
        if name in plots:
            blocks += [("h", 2, cap[0].upper() + cap[1:]), ("img", plots[name], cap)]
    for w in analysis.get("warnings", []):
        blocks.append(("p", f"Warning: {w}"))
    return _render(blocks, fmt, title)


_METRIC_LABELS = {"coco": "mask", "ap_star": "AP*", "boundary_ap": "Boundary", "boundary_f": "", "boundary_acc":
                  "boundary acc."}


def compare_page(comparison: dict, fmt: str = "md", title: str | None = None, fragment: bool = False) -> str:
    """The comparison table: A, B, Δ, its 95 % bootstrap interval and P(Δ ≤ 0), in points.

    ``fmt``: "md" or "html" (a standalone page; ``fragment=True``: the body only, to go under a paper table).

    Raises:
        UsageError: another format.
    """
    n = comparison["names"]
    bs = comparison["bootstrap"]
    title = title or f"{n['b']} vs {n['a']}"
    rows = []
    for key, r in comparison["metrics"].items():
        ci = r["ci95"]
        rows.append([key, fmt_points(r["a"]), fmt_points(r["b"]), fmt_points(r["delta"], True, 2),
                     "—" if ci is None else f"[{fmt_points(ci[0], True, 2)}, {fmt_points(ci[1], True, 2)}]",
                     "—" if r["p_le_0"] is None else f"{r['p_le_0']:.3f}"])
    blocks = [("h", 1, title),
              ("p", f"Δ = {n['b']} − {n['a']} in points (×100). Interval: {bs['interval']}, over {bs['resamples']} "
                    f"paired bootstrap resamples of the {bs['images']} images (seed {bs['seed']}); P(Δ ≤ 0) is the "
                    f"fraction of resamples in which {n['b']} is not better."),
              ("table", ["metric", n["a"], n["b"], "Δ", "95% CI of Δ", "P(Δ ≤ 0)"], rows)]
    return _render(blocks, fmt, title, fragment)
