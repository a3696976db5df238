"""Write data/golden/constructed_B.json: constructed set seed 0 with boundary-iou-api's and pycocotools' numbers.

boundary-iou-api is not on PyPI and cannot be installed here, so the tests cannot run it; this script runs it once
from a source checkout (pure Python, nothing to compile) and stores its numbers beside the exact inputs, as the
set-A golden files do. The set holds a 1-pixel-high image, on which faster-coco-eval 1.8.0's Boundary IoU differs
from boundary-iou-api (tests/test_eval_engines.py; docs/evaluation.md §2.5).

Usage:
    python tools/make_golden_constructed.py --boundary-iou-api SRC [--out data/golden/constructed_B.json]

SRC is a checkout of github.com/bowenc0221/boundary-iou-api (the golden set A used commit
37d25586a677b043ed585f10e5c42d4e80176ea9).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.coco import COCO_STATS, coco_mask_ap  # noqa: E402
from eval.io import validate_gt, validate_results, write_json  # noqa: E402
from tests.constructed import constructed_set  # noqa: E402

RATIOS = (0.02, 0.005)


def _boundary_iou_api(src: Path, gt: dict, results: list[dict], ratio: float) -> dict:
    sys.path.insert(0, str(src))
    if "float" not in np.__dict__:
        np.float = float  # boundary-iou-api predates NumPy 1.24
    from boundary_iou.coco_instance_api.coco import COCO
    from boundary_iou.coco_instance_api.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(get_boundary=True, dilation_ratio=ratio)
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iouType="boundary", dilation_ratio=ratio)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_cat = {}
    for k, c in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        per_cat[str(c)] = float(np.mean(p)) if p.size else -1.0
    return {"stats": dict(zip(COCO_STATS, map(float, ev.stats))), "per_category_AP": per_cat}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boundary-iou-api", type=Path, required=True, help="a boundary-iou-api source checkout")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "golden" / "constructed_B.json")
    args = ap.parse_args()
    src = args.boundary_iou_api
    if not (src / "boundary_iou" / "coco_instance_api" / "cocoeval.py").is_file():
        ap.error(f"{src} is not a boundary-iou-api checkout (no boundary_iou/coco_instance_api/cocoeval.py)")
    gt, raw = constructed_set(0)
    validate_gt(gt)
    results = validate_results(copy.deepcopy(raw), gt)
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {
        "what": "tests/constructed.py constructed_set(0), validated (results as rasterised compressed RLE), with the "
                "numbers of boundary-iou-api (Boundary AP at two dilation ratios) and pycocotools (segm)",
        "gt": gt,
        "results": results,
        "boundary_iou_api": {"commit": commit or "unknown (not a git checkout)",
                             **{str(r): _boundary_iou_api(src, gt, results, r) for r in RATIOS}},
        "pycocotools_segm": {"stats": coco_mask_ap(gt, results, engine="reference")["summary"]},
    }
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
