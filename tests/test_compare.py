"""``rmbench compare``: exact re-accumulation from per-image records, the paired bootstrap, the command.

The re-accumulation (eval/accumulate.py) is checked three ways: its per-image records equal the references'
(pycocotools ``evalImgs``, lvis-api ``eval_imgs``) field by field; with every image once it gives the references'
precision arrays bit for bit; with bootstrap weights it gives bit for bit what the reference computes on the
resampled dataset built by brute force (image i copied w_i times, new ids in draw order).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest

from eval import engines
from eval.accumulate import coco_summary, lvis_summary, records_from_eval_imgs
from eval.boundary_f import boundary_f
from eval.coco import COCO_STATS, pycocotools_coco
from eval.compare import compare
from eval.io import COCO_CATEGORY_IDS, validate_gt, validate_results
from eval.lvis_ap import _lvis_from_dict, lvis_numpy_shim
from refinemask.cli import main
from tests.constructed import constructed_set
from tests.helpers import COCO_VAL_GT, LVIS_COCOFIED, PREDS_A, _load


def _pycocotools(gt, results):
    from pycocotools.cocoeval import COCOeval

    coco = pycocotools_coco(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _lvis_api(lvis_gt, results):
    from lvis import LVISEval, LVISResults

    with lvis_numpy_shim(), contextlib.redirect_stdout(io.StringIO()):
        g = _lvis_from_dict(copy.deepcopy(lvis_gt))
        ev = LVISEval(g, LVISResults(g, copy.deepcopy(results), max_dets=300), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _resampled(gt: dict, results: list[dict], draw: np.ndarray) -> tuple[dict, list[dict]]:
    """The brute-force resampled dataset: sorted image index draw -> image copies with ids 1..n in draw order."""
    ids = sorted(im["id"] for im in gt["images"])
    by_img = {im["id"]: im for im in gt["images"]}
    anns, res = {}, {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    for r in results:
        res.setdefault(r["image_id"], []).append(r)
    images, new_anns, new_res = [], [], []
    for new, i in enumerate(np.sort(draw), start=1):
        old = ids[i]
        images.append(dict(by_img[old], id=new))
        for a in anns.get(old, []):
            new_anns.append(dict(a, id=len(new_anns) + 1, image_id=new))
        new_res += [dict(r, image_id=new) for r in res.get(old, [])]
    return dict(gt, images=images, annotations=new_anns), new_res


@pytest.fixture(scope="module")
def golden_a():
    gt = validate_gt(_load(COCO_VAL_GT))
    return gt, validate_results(_load(PREDS_A), gt)


@pytest.fixture(scope="module", params=[0, 1])
def constructed(request):
    gt, raw = constructed_set(request.param)
    gt = validate_gt(gt)
    return gt, validate_results(raw, gt)


def _records(gt, res, iou="segm", lvis=False):
    ei, imgs, cats, md = engines.vernier_eval_imgs(gt, res, iou=iou, lvis=lvis)
    return ei, records_from_eval_imgs(ei, imgs, cats, max_det=md)


def test_vernier_eval_imgs_equal_pycocotools(golden_a):
    gt, res = golden_a
    ei, _ = _records(gt, res)
    ref = _pycocotools(gt, res).evalImgs
    assert len(ei) == len(ref)
    for a, b in zip(ref, ei):
        assert (a is None) == (b is None)
        if a is None:
            continue
        for k in ("dtIds", "gtIds", "dtScores"):
            assert list(a[k]) == list(b[k]), k
        for k in ("dtMatches", "gtMatches", "gtIgnore", "dtIgnore"):
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_full_set_accumulation_is_the_reference(golden_a, constructed):
    for gt, res in (golden_a, constructed):
        _, rec = _records(gt, res)
        ev = _pycocotools(gt, res)
        p = rec.precision()
        np.testing.assert_array_equal(p, ev.eval["precision"][..., 2])
        s = coco_summary(p)
        for k, v in zip(COCO_STATS[:6], ev.stats[:6]):
            assert (math.isnan(s[k]) and v == -1) or s[k] == v, k
        _, brec = _records(gt, res, "boundary")
        np.testing.assert_array_equal(brec.precision(), engines.vernier_coco(gt, res, "boundary")[1][..., 2])


def test_boundary_records_equal_golden_boundary_iou_api(golden_a):
    gt, res = golden_a
    golden = _load(COCO_VAL_GT.parent.parent.parent / "golden" / "golden_A.json")["boundary_ap"]["stats"]
    s = coco_summary(_records(gt, res, "boundary")[1].precision())
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert s[k] == golden[k], k


def test_lvis_accumulation_is_lvis_api():
    lgt = validate_gt(_load(LVIS_COCOFIED), expect="lvis")
    res = validate_results(_load(PREDS_A.parent / "preds_A_lvis.json"), lgt, category_ids=COCO_CATEGORY_IDS)
    ei, rec = _records(lgt, res, lvis=True)
    ev = _lvis_api(lgt, res)
    for a, b in zip(ev.eval_imgs, ei):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(np.asarray(a["dt_matches"]), b["dtMatches"])
            np.testing.assert_array_equal(np.asarray(a["dt_ignore"]), b["dtIgnore"])
    p = rec.precision()
    np.testing.assert_array_equal(p, ev.eval["precision"])
    freq = {c["id"]: c.get("frequency") for c in lgt["categories"]}
    s = lvis_summary(p, rec.cat_ids, freq)
    ref = ev.get_results()
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"):
        assert (math.isnan(s[k]) and ref[k] == -1) or s[k] == ref[k], k
    # resampled: lvis-api on the brute-force dataset
    rng = np.random.default_rng(3)
    n = len(rec.image_ids)
    for _ in range(2):
        draw = rng.integers(0, n, n)
        g2, r2 = _resampled(lgt, res, draw)
        np.testing.assert_array_equal(rec.precision(np.bincount(draw, minlength=n)),
                                      _lvis_api(g2, r2).eval["precision"])


def test_weighted_accumulation_equals_brute_force_resampling(golden_a, constructed):
    """Bootstrap weights = the reference on the dataset with image i copied w_i times (ties, crowds, > 100 dets,
    empty images included: the constructed sets)."""
    rng = np.random.default_rng(11)
    for gt, res in (golden_a, constructed):
        _, rec = _records(gt, res)
        _, brec = _records(gt, res, "boundary")
        n = len(rec.image_ids)
        for _ in range(2):
            draw = rng.integers(0, n, n)
            w = np.bincount(draw, minlength=n)
            g2, r2 = _resampled(gt, res, draw)
            np.testing.assert_array_equal(rec.precision(w), _pycocotools(g2, r2).eval["precision"][..., 2])
            np.testing.assert_array_equal(brec.precision(w), engines.vernier_coco(g2, r2, "boundary")[1][..., 2])
        zero = np.zeros(n, dtype=np.int64)
        assert (rec.precision(zero) == -1).all()
    with pytest.raises(ValueError, match="non-negative integers"):
        rec.precision(np.full(n, 0.5))


def _small(gt, res, k=24):
    keep = {im["id"] for im in sorted(gt["images"], key=lambda im: im["id"])[:k]}
    return (dict(gt, images=[im for im in gt["images"] if im["id"] in keep],
                 annotations=[a for a in gt["annotations"] if a["image_id"] in keep]),
            [r for r in res if r["image_id"] in keep])


def _shifted(res, dx=2):
    from pycocotools import mask as mask_utils

    from eval.masks import mask_to_rle

    out = []
    for r in res:
        m = mask_utils.decode(r["segmentation"])
        m2 = np.zeros_like(m)
        m2[:, dx:] = m[:, :-dx]
        rle = mask_to_rle(m2)
        out.append(dict(r, segmentation={"size": rle["size"], "counts": rle["counts"].decode()
                                         if isinstance(rle["counts"], bytes) else rle["counts"]}))
    return out


def test_compare_point_estimates_and_bootstrap_against_brute_force(golden_a):
    gt, res = _small(*golden_a)
    b = _shifted(res)
    out = compare(gt, res, b, names=("a", "b"), resamples=6, seed=7, progress=False)
    m = out["metrics"]
    # point estimates: the references on the full set
    for key, results in (("a", res), ("b", b)):
        ev = _pycocotools(gt, results)
        for k, v in zip(COCO_STATS[:6], ev.stats[:6]):
            got = m[f"coco.{k}"][key]
            assert (math.isnan(got) and v == -1) or got == v, (key, k)
        bf = boundary_f(gt, results)
        assert m["boundary_f.F1px"][key] == pytest.approx(bf["F1px"], abs=1e-12)
    assert m["coco.AP"]["delta"] == m["coco.AP"]["b"] - m["coco.AP"]["a"]
    # the bootstrap: the same draws, each evaluated from scratch by the references on the resampled dataset
    ids = sorted(im["id"] for im in gt["images"])
    rng = np.random.default_rng(7)
    d_ap, d_f = [], []
    for _ in range(6):
        draw = rng.integers(0, len(ids), len(ids))
        ga, ra = _resampled(gt, res, draw)
        _, rb = _resampled(gt, b, draw)
        d_ap.append(_pycocotools(ga, rb).stats[0] - _pycocotools(ga, ra).stats[0])
        d_f.append(boundary_f(ga, rb)["F1px"] - boundary_f(ga, ra)["F1px"])
    lo, hi = np.percentile(d_ap, [2.5, 97.5])
    assert m["coco.AP"]["ci95"] == [lo, hi]
    assert m["coco.AP"]["p_le_0"] == np.mean(np.asarray(d_ap) <= 0)
    lo, hi = np.percentile(d_f, [2.5, 97.5])
    assert m["boundary_f.F1px"]["ci95"] == pytest.approx([lo, hi], abs=1e-12)
    assert out["bootstrap"] == {**out["bootstrap"], "resamples": 6, "seed": 7, "unit": "image", "images": len(ids)}


def test_compare_identical_sets_have_zero_delta(golden_a):
    gt, res = _small(*golden_a, k=12)
    out = compare(gt, res, copy.deepcopy(res), names=("x", "y"), resamples=5, progress=False)
    for key, row in out["metrics"].items():
        if row["defined"]:
            assert row["delta"] == 0 and row["ci95"] == [0.0, 0.0] and row["p_le_0"] == 1.0, key


def test_compare_cli(tmp_path, golden_a):
    gt, res = _small(*golden_a, k=16)
    gp, ap, bp = tmp_path / "gt.json", tmp_path / "a.json", tmp_path / "b.json"
    gp.write_text(json.dumps(gt))
    ap.write_text(json.dumps(res))
    bp.write_text(json.dumps(_shifted(res)))
    out = tmp_path / "cmp"
    assert main(["compare", "--gt", str(gp), "--results", str(ap), str(bp), "--bootstrap", "20",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "compare.json").read_text())
    assert set(doc) >= {"metrics", "bootstrap", "provenance", "names"}
    row = doc["metrics"]["coco.AP"]
    assert set(row) >= {"a", "b", "delta", "ci95", "p_le_0"} and row["ci95"][0] <= row["delta"] + 1e-12
    assert doc["names"] == {"a": "a", "b": "b"} and doc["bootstrap"]["resamples"] == 20
    assert "| coco.AP |" in (out / "compare.md").read_text()
    # bad usage: exit 2, nothing written
    for argv in (["--names", "same,same"], ["--bootstrap", "-1"], ["--names", "onlyone"]):
        bad = tmp_path / "bad"
        assert main(["compare", "--gt", str(gp), "--results", str(ap), str(bp), "--out", str(bad), *argv]) == 2
        assert not bad.exists()
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"image_id": res[0]["image_id"], "category_id": 1, "score": 2.0,
                                   "segmentation": res[0]["segmentation"]}]))
    assert main(["compare", "--gt", str(gp), "--results", str(ap), str(broken), "--out", str(tmp_path / "b2")]) == 2
    assert not (tmp_path / "b2" / "compare.json").exists()


def test_report_renders_a_comparison_alone_and_under_a_paper_table(tmp_path, golden_a, capsys):
    gt, res = _small(*golden_a, k=10)
    gp, ap, bp = tmp_path / "gt.json", tmp_path / "a.json", tmp_path / "b.json"
    gp.write_text(json.dumps(gt))
    ap.write_text(json.dumps(res))
    bp.write_text(json.dumps(_shifted(res)))
    assert main(["compare", "--gt", str(gp), "--results", str(ap), str(bp), "--bootstrap", "8", "--names",
                 "mrcnn,refinemask", "--out", str(tmp_path / "c")]) == 0
    doc = json.loads((tmp_path / "c" / "compare.json").read_text())
    capsys.readouterr()
    assert main(["report", "--compare", str(tmp_path / "c" / "compare.json")]) == 0
    text = capsys.readouterr().out
    row = doc["metrics"]["coco.AP"]
    assert f"| coco.AP | {100 * row['a']:.1f} | {100 * row['b']:.1f} | {100 * row['delta']:+.2f} |" in text
    assert main(["report", "--table", "14", "--compare", str(tmp_path / "c" / "compare.json")]) == 0
    text = capsys.readouterr().out
    assert "Table 14" in text and "## refinemask vs mrcnn" in text
    assert main(["report", "--compare", str(gp)]) == 2  # not a compare.json
    assert main(["report"]) == 2


def test_compare_against_an_empty_set_and_html_under_a_table(tmp_path, golden_a, capsys):
    gt, res = _small(*golden_a, k=10)
    out = compare(gt, [], res, names=("none", "a"), resamples=10, seed=1, progress=False)
    row = out["metrics"]["coco.AP"]
    assert row["a"] == 0.0 and row["delta"] == row["b"] > 0
    assert row["defined"] == 10 and row["p_le_0"] == 0.0 and 0 < row["ci95"][0] <= row["ci95"][1]
    gp, ap, bp = tmp_path / "gt.json", tmp_path / "a.json", tmp_path / "b.json"
    gp.write_text(json.dumps(gt))
    ap.write_text(json.dumps(res))
    bp.write_text(json.dumps(_shifted(res)))
    assert main(["compare", "--gt", str(gp), "--results", str(ap), str(bp), "--bootstrap", "4",
                 "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    cj = str(tmp_path / "c" / "compare.json")
    assert main(["report", "--table", "14", "--compare", cj, "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.count("<html") == 1 and page.index("coco.AP") < page.index("</body>")
    assert main(["report", "--all", "--compare", cj]) == 2
    assert main(["report", "--table", "14", "--compare", cj, "--format", "csv"]) == 2
