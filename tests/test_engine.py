"""Training / inference engine: datasets, samplers, schedule, checkpoints (atomic, weights_only, clear errors),
exact resume, and the ``rmbench train / infer / models`` commands on the bundled coco_mini images.

CPU only. Models run at a tiny input size (short side 64) with few RoIs and proposals (``cfg_options``), so the
whole file takes about a minute on 2 cores.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch import nn

from refinemask import cli
from refinemask.cli.models import parse_scale
from refinemask.data import (
    DatasetError,
    GroupedBatchSampler,
    InstanceDataset,
    expand_indices,
    inference_shard,
    resolve_data_paths,
    write_subset_json,
)
from refinemask.engine.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    get_rng_state,
    load_checkpoint,
    load_model_state,
    set_rng_state,
)
from refinemask.engine.inference import detections_to_coco
from refinemask.engine.trainer import TrainConfig, Trainer, WarmupStepSchedule, apply_cfg_options
from refinemask.models import list_presets
from refinemask.registry import get_preset
from tests.helpers import ROOT

COCO = ROOT / "data" / "coco_mini"
TRAIN_JSON = COCO / "annotations" / "instances_train2017.json"
VAL_JSON = COCO / "annotations" / "instances_val2017.json"
PRESET = "mask_rcnn_r50_fpn_1x_coco"
#: tiny-but-real settings: few anchors / RoIs / proposals / detections (CPU time), same code path
TINY = ["rpn.batch_size_per_image=32", "rpn.pre_nms_top_n_train=200", "rpn.post_nms_top_n_train=50",
        "rpn.pre_nms_top_n_test=200", "rpn.post_nms_top_n_test=50", "roi.batch_size_per_image=16",
        "roi.detections_per_img=5"]
TRAIN_IDS = [187334, 249346, 163497, 194322]  # three landscape images and one portrait (two sampler groups)


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """One torch thread: on 2 cores shared with other jobs, OpenMP oversubscription makes 2 threads several times
    slower (measured 0.75 s vs 4-8 s per overfit iteration); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------------------
# datasets
def test_coco_dataset_targets_crowd_and_labels():
    ds = InstanceDataset(VAL_JSON, COCO / "val2017")
    raw = json.loads(VAL_JSON.read_text())
    assert len(ds) == len(raw["images"]) and ds.num_classes == 80
    assert ds.label_to_cat_id == sorted(c["id"] for c in raw["categories"])
    assert all(ds.cat_id_to_label[c] == i for i, c in enumerate(ds.label_to_cat_id))
    crowd_img = next(a["image_id"] for a in raw["annotations"] if a["iscrowd"])
    idx = ds.image_ids.index(crowd_img)
    image, t = ds[idx]
    n_usable = sum(1 for a in raw["annotations"] if a["image_id"] == crowd_img and not a["iscrowd"])
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    h, w = image.shape[1:]
    assert t["boxes"].shape == (n_usable, 4) and t["labels"].shape == (n_usable,)
    assert t["masks"].shape == (n_usable, h, w)
    assert t["image_id"] == crowd_img and t["orig_size"] == (h, w) and t["flipped"] is False
    assert t["labels"].dtype == torch.int64 and int(t["labels"].max()) < 80
    b = t["boxes"]
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    # masks lie inside their boxes (COCO bbox = tight box of the polygon, up to a pixel)
    for m, box in zip(t["masks"], b):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1 and ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1


def test_flip_mirrors_image_boxes_and_masks():
    ds = InstanceDataset(TRAIN_JSON, COCO / "train2017", image_ids=[84533])
    image, t = ds[0]
    fimage, ft = ds[(0, True)]
    w = image.shape[-1]
    assert ft["flipped"] is True
    assert torch.equal(fimage, image.flip(-1)) and torch.equal(ft["masks"], t["masks"].flip(-1))
    assert torch.allclose(ft["boxes"][:, 0], w - t["boxes"][:, 2])
    assert torch.allclose(ft["boxes"][:, 2], w - t["boxes"][:, 0])
    assert torch.equal(ft["boxes"][:, 1::2], t["boxes"][:, 1::2]) and torch.equal(ft["labels"], t["labels"])


def _synthetic_dataset(tmp_path: Path) -> Path:
    """A 40x30 image with polygon, compressed-RLE, uncompressed-RLE, crowd and degenerate annotations, LVIS-style
    file lookup (no file_name: coco_url only)."""
    (tmp_path / "val2017").mkdir()
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(tmp_path / "val2017" / "000000000007.jpg")
    m = np.zeros((30, 40), np.uint8)
    m[5:15, 20:35] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    # uncompressed RLE (column-major run lengths) of a 4x3 block at x 2..5, y 20..22
    u = np.zeros((30, 40), np.uint8)
    u[20:23, 2:6] = 1
    flat = u.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    ds = {
        "images": [{"id": 7, "width": 40, "height": 30,
                    "coco_url": "http://images.cocodataset.org/val2017/000000000007.jpg"}],
        "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 9, "bbox": [2, 2, 8, 6], "area": 30, "iscrowd": 0,
             "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]]},
            {"id": 2, "image_id": 7, "category_id": 5, "bbox": [20, 5, 15, 10], "area": 150, "iscrowd": 0,
             "segmentation": {"size": [30, 40], "counts": rle["counts"].decode("ascii")}},
            {"id": 3, "image_id": 7, "category_id": 5, "bbox": [2, 20, 4, 3], "area": 12, "iscrowd": 0,
             "segmentation": {"size": [30, 40], "counts": runs}},
            {"id": 4, "image_id": 7, "category_id": 9, "bbox": [0, 0, 40, 30], "area": 1200, "iscrowd": 1,
             "segmentation": {"size": [30, 40], "counts": runs}},
            {"id": 5, "image_id": 7, "category_id": 9, "bbox": [3, 3, 0.5, 4], "area": 2, "iscrowd": 0,
             "segmentation": [[3, 3, 3.5, 3, 3.5, 7]]},
        ],
    }
    (tmp_path / "gt.json").write_text(json.dumps(ds))
    return tmp_path / "gt.json"


def test_polygon_and_rle_masks_lvis_style_lookup(tmp_path):
    gt = _synthetic_dataset(tmp_path)
    ds = InstanceDataset(gt, tmp_path)  # image found as <root>/val2017/<name> from coco_url
    image, t = ds[0]
    assert image.shape == (3, 30, 40)
    assert t["labels"].tolist() == [1, 0, 0]  # cat 9 -> 1, cat 5 -> 0; crowd and 0.5-px-wide box dropped
    assert t["masks"][1].sum() == 150 and t["masks"][1][5:15, 20:35].all()  # compressed RLE
    assert t["masks"][2].sum() == 12 and t["masks"][2][20:23, 2:6].all()  # uncompressed RLE
    assert t["masks"][0][3:8, 3:10].all()  # polygon
    assert t["boxes"][1].tolist() == [20, 5, 35, 15]
    inf = InstanceDataset(gt, tmp_path, with_masks=False)
    assert set(inf[0][1]) == {"image_id", "orig_size", "flipped"}
    # HTC inputs: COCO-stuff style label maps (<stem>.png) and crowd masks, flipped with the image
    (tmp_path / "stuff").mkdir()
    sem = np.full((30, 40), 255, np.uint8)
    sem[:, :10] = 7
    Image.fromarray(sem).save(tmp_path / "stuff" / "000000000007.png")
    htc = InstanceDataset(gt, tmp_path, semantic_root=tmp_path / "stuff", with_crowd_masks=True)
    _, t = htc[0]
    _, ft = htc[(0, True)]
    assert t["semantic_seg"].shape == (30, 40) and (t["semantic_seg"][:, :10] == 7).all()
    assert torch.equal(ft["semantic_seg"], t["semantic_seg"].flip(-1))
    assert t["crowd_masks"].shape == (1, 30, 40) and torch.equal(ft["crowd_masks"], t["crowd_masks"].flip(-1))
    from refinemask.engine.trainer import _semantic_inputs

    assert _semantic_inputs(get_preset("htc_thing_semantic_r50_fpn_1x_coco")) == (None, True)
    htc_stuff = get_preset("htc_r50_fpn_1x_coco")
    htc_stuff = dataclasses.replace(htc_stuff, mask_head_cfg=dataclasses.replace(
        htc_stuff.mask_head_cfg, stuff_root=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="COCO-stuff label maps.*RMBENCH_COCO_STUFF"):
        _semantic_inputs(htc_stuff)


def test_dataset_errors_name_file_and_fix(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json.*not valid json"):
        InstanceDataset(bad, tmp_path)
    gt = _synthetic_dataset(tmp_path)
    (tmp_path / "empty").mkdir()
    ds = InstanceDataset(gt, tmp_path / "empty")  # wrong root: the lookup fails when the image is read
    with pytest.raises(DatasetError, match="image file of image id 7 not found.*Fix"):
        ds[0]
    with pytest.raises(DatasetError, match="annotation file not found.*looked under"):
        resolve_data_paths("coco_2017", "train", tmp_path)
    paths = resolve_data_paths("coco_2017", "train", ROOT / "data")  # a data folder holding coco_mini/
    assert paths.json == TRAIN_JSON and paths.images == COCO / "train2017"
    assert resolve_data_paths("coco_2017", "val", tmp_path, required=False) is None


# ------------------------------------------------------------------------------------------------------------
# samplers and schedule
def test_grouped_sampler_groups_resume_and_shards():
    groups = np.array([0, 1, 1, 0, 1, 1, 1, 0, 1, 1])
    s = GroupedBatchSampler(groups, 2, seed=3, flip_ratio=0.5)
    it = iter(s)
    epochs = [[next(it) for _ in range(s.batches_per_epoch)] for _ in range(2)]
    for batch in epochs[0] + epochs[1]:
        assert len({groups[i] for i, _ in batch}) == 1  # aspect-ratio grouped
    assert sorted({i for b in epochs[0] for i, _ in b}) == list(range(10))  # every image each epoch
    assert epochs[0] != epochs[1]  # reshuffled per epoch
    flips = [f for b in epochs[0] + epochs[1] for _, f in b]
    assert 0 < sum(flips) < len(flips)
    # resume: starting at iteration k gives exactly the uninterrupted stream from k
    flat = epochs[0] + epochs[1]
    k = s.batches_per_epoch + 1
    r = iter(GroupedBatchSampler(groups, 2, seed=3, flip_ratio=0.5, start_iter=k))
    assert [next(r) for _ in range(len(flat) - k)] == flat[k:]
    # DDP shards: same length on every rank, disjoint batches whose union is the single-process epoch
    shards = [GroupedBatchSampler(groups, 2, seed=3, flip_ratio=0.5, rank=r, world_size=2) for r in range(2)]
    assert shards[0].batches_per_epoch == shards[1].batches_per_epoch
    per_rank = [[next(iter_) for _ in range(sh.batches_per_epoch)] for sh, iter_ in ((sh, iter(sh)) for sh in shards)]
    merged = sorted(map(tuple, per_rank[0] + per_rank[1]))
    assert merged == sorted(map(tuple, s.epoch_batches(0)))
    # repeat / class-balanced expansion, inference shards
    assert expand_indices(3, 2, [1.0, 2.5, 1.0]) == [0, 1, 1, 1, 2] * 2
    cover = [i for r in range(3) for i in inference_shard(10, r, 3)]
    assert cover == list(range(10)) and [len(inference_shard(10, r, 3)) for r in range(3)] == [4, 3, 3]


def test_warmup_step_schedule_matches_mmdet():
    f = WarmupStepSchedule(steps=[8, 11], gamma=0.1, warmup_iters=4, warmup_ratio=0.001)
    # mmdet linear warm-up: lr = base * (1 - (1 - it/warmup) * (1 - ratio))
    assert f(0) == pytest.approx(0.001) and f(2) == pytest.approx(1 - 0.5 * 0.999) and f(4) == 1.0
    assert f(7) == 1.0 and f(8) == pytest.approx(0.1) and f(11) == pytest.approx(0.01)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.02 * 0.001) and lrs[5] == pytest.approx(0.02) and lrs[9] == pytest.approx(0.002)
    assert parse_scale("320") == (533, 320) and parse_scale("533,320") == (533, 320)
    p = apply_cfg_options(get_preset(PRESET),
                          ["roi.batch_size_per_image=16", "frozen_stages=4", "test_scale=[533,320]"])
    assert p.roi.batch_size_per_image == 16 and p.frozen_stages == 4 and p.test_scale == (533, 320)
    with pytest.raises(ValueError, match="no field 'batch'.*fields:"):
        apply_cfg_options(p, ["roi.batch=3"])


# ------------------------------------------------------------------------------------------------------------
# checkpoints
class _Tiny(nn.Module):
    def __init__(self, c: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, 4, 3)
        self.head = nn.Linear(4, 2)


class _NotWeights:
    pass


def test_checkpoint_weights_only_roundtrip_and_rng(tmp_path):
    torch.manual_seed(0)
    model = _Tiny()
    rng = get_rng_state()
    state = {"format": "x", "model": model.state_dict(), "iter": 3, "rng": [rng], "classes": [1, 2], "f": 0.5}
    path = atomic_torch_save(state, tmp_path / "ck.pth")
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind
    back = load_checkpoint(path)  # weights_only=True inside
    assert back["iter"] == 3 and back["classes"] == [1, 2]
    a = (np.random.rand(), torch.rand(1).item(), random.random())
    set_rng_state(back["rng"][0])
    assert (np.random.rand(), torch.rand(1).item(), random.random()) == a
    other = _Tiny()
    load_model_state(other, back["model"], path)
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), other.state_dict().values()))
    # a DDP-style "module." prefix is accepted
    load_model_state(other, {f"module.{k}": v for k, v in back["model"].items()}, path)


def test_checkpoint_errors_name_file_and_keys(tmp_path):
    model = _Tiny()
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    good = atomic_torch_save({"model": model.state_dict()}, tmp_path / "good.pth")
    data = good.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pth is corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="garbage.pth is corrupt or truncated"):
        load_checkpoint(tmp_path / "garbage.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth is empty"):
        load_checkpoint(tmp_path / "empty.pth")
    torch.save({"model": model.state_dict(), "obj": _NotWeights()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="pickled.pth holds objects that weights_only=True refuses .*_NotWeights"):
        load_checkpoint(tmp_path / "pickled.pth")
    sd = model.state_dict()
    bad = {k: v for k, v in sd.items() if k != "head.bias"}
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"mismatch.pth.*missing keys: head.bias.*unexpected keys: extra.weight"):
        load_model_state(model, bad, tmp_path / "mismatch.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches: conv.weight: checkpoint \(4, 5, 3, 3\) vs model"):
        load_model_state(model, _Tiny(c=5).state_dict(), "other.pth")
    # the CLI turns it into exit code 2 with the file name on stderr
    code = cli.main(["infer", "--preset", PRESET, "--checkpoint", str(tmp_path / "trunc.pth"), "--gt", str(VAL_JSON),
                     "--images", str(COCO / "val2017"), "--out", str(tmp_path / "r.json")])
    assert code == 2


# ------------------------------------------------------------------------------------------------------------
# training: exact resume, then the CLI end to end
def _cfg(work_dir: Path, **kw) -> TrainConfig:
    base = dict(preset=PRESET, work_dir=work_dir, train_json=TRAIN_JSON, train_images=COCO / "train2017",
                train_image_ids=TRAIN_IDS, batch_size=2, num_workers=1, max_iters=4, warmup_iters=2, lr=0.005,
                img_scale=(107, 64), multiscale=(56, 72), flip_ratio=0.5, checkpoint_interval=2, log_interval=1,
                eval_interval=-1, cfg_options=TINY + ["frozen_stages=4"], device="cpu", tensorboard=False,
                progress=False, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def _log_rows(work_dir: Path) -> list[dict]:
    with open(work_dir / "log.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k.startswith("loss") or k in ("iter", "lr")} for r in csv.DictReader(f)]


def test_resume_continues_exactly(tmp_path):
    """Losses after --resume equal the uninterrupted run's (python/numpy/torch RNG, sampler position with
    multi-scale + flips, optimizer momentum and the lr schedule all restored)."""
    a = tmp_path / "a"
    Trainer(_cfg(a)).train()
    b = tmp_path / "b"
    Trainer(_cfg(b)).train(until=2)  # "interrupted" after iteration 2 (checkpoint written there)
    assert [r["iter"] for r in _log_rows(b)] == ["1", "2"]
    (b / "log.csv").write_text((b / "log.csv").read_text() + "3,junk-from-a-crashed-run\n")  # rows past the ckpt
    summary = Trainer(_cfg(b, resume="auto")).train()
    assert summary["iter"] == 4
    rows_a, rows_b = _log_rows(a), _log_rows(b)
    assert [r["iter"] for r in rows_b] == ["1", "2", "3", "4"]
    assert rows_a == rows_b  # bit-identical loss and lr sequence
    assert all(np.isfinite(float(v)) for r in rows_a for k, v in r.items() if k.startswith("loss"))
    ca, cb = load_checkpoint(a / "latest.pth"), load_checkpoint(b / "latest.pth")
    assert ca["iter"] == cb["iter"] == 4 and ca["sampler"] == cb["sampler"]
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert {p.name for p in a.glob("*.pth")} == {"iter_2.pth", "iter_4.pth", "latest.pth"}
    # a checkpoint of another preset is refused with the fix
    with pytest.raises(CheckpointError, match="trained with preset 'mask_rcnn_r50_fpn_1x_coco'.*--preset"):
        Trainer(_cfg(tmp_path / "c", preset="mask_rcnn_r50_fpn_2x_coco", resume=a / "iter_2.pth"))


def test_cli_train_infer_eval_and_models(tmp_path, capsys):
    val_ids = [397133, 349860, 11813]
    val_gt = write_subset_json(VAL_JSON, val_ids, tmp_path / "val3.json")
    work = tmp_path / "run"
    common = ["--img-scale", "107,64", "--cfg-options", *TINY]
    code = cli.main(["train", "--preset", PRESET, "--data-root", str(COCO), "--work-dir", str(work),
                     "--image-ids", ",".join(map(str, TRAIN_IDS[:2])), "--val-json", str(val_gt),
                     "--val-images", str(COCO / "val2017"), "--max-iters", "2", "--warmup-iters", "1",
                     "--batch-size", "2", "--workers", "0", "--eval-interval", "0", "--log-interval", "1",
                     "--device", "cpu", *common])
    assert code == 0
    for name in ("config.json", "log.csv", "iter_2.pth", "latest.pth", "metrics.json", "metrics.md",
                 "eval/iter_2/results.json"):
        assert (work / name).is_file(), name
    assert list((work / "tb").glob("events.out.tfevents.*"))
    doc = json.loads((work / "metrics.json").read_text())
    assert doc["run"]["preset"] == PRESET and doc["run"]["method"] == "Mask R-CNN"
    assert doc["run"]["backbone"] == "resnet50" and doc["run"]["schedule"] == "1x"
    assert doc["run"]["dataset"] == "coco_2017"
    assert set(doc["coco"]) >= {"AP", "AP50"} and doc["provenance"]["inputs"]["gt"]["sha256"]
    # the same checkpoint through `rmbench infer --eval-out`
    out = tmp_path / "results.json"
    code = cli.main(["infer", "--preset", PRESET, "--checkpoint", str(work / "latest.pth"), "--gt", str(val_gt),
                     "--images", str(COCO / "val2017"), "--out", str(out), "--eval-out", str(tmp_path / "ev"),
                     "--workers", "0", "--device", "cpu", "--score-thr", "0.0", *common])
    assert code == 0
    results = json.loads(out.read_text())
    train_res = json.loads((work / "eval/iter_2/results.json").read_text())
    assert {r["image_id"] for r in results} <= set(val_ids)
    assert len(results) >= len(train_res) and all(len([r for r in results if r["image_id"] == i]) <= 5 for i in val_ids)
    raw = json.loads(VAL_JSON.read_text())
    cats = {c["id"] for c in raw["categories"]}
    sizes = {im["id"]: [im["height"], im["width"]] for im in raw["images"]}
    for r in results:
        assert r["category_id"] in cats and 0.0 <= r["score"] <= 1.0 and len(r["bbox"]) == 4
        assert r["segmentation"]["size"] == sizes[r["image_id"]] and isinstance(r["segmentation"]["counts"], str)
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["run"]["preset"] == PRESET and ev["run"]["iteration"] == 2 and "coco" in ev
    # `rmbench models`: every preset with its parameter count, fast (meta device)
    capsys.readouterr()
    t0, c0 = time.perf_counter(), time.process_time()
    assert cli.main(["models", "--json"]) == 0
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = {r["preset"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[PRESET]["params"] == 44_396_336 and rows[PRESET]["method"] == "Mask R-CNN"
    assert set(rows) == set(list_presets())
    # CPU time, not wall time: other jobs on a shared machine must not make this flaky (about 3 s idle)
    assert cpu < 10.0, f"rmbench models took {cpu:.1f} s CPU ({wall:.1f} s wall)"


def test_detections_to_coco_maps_labels_back():
    det = {"boxes": torch.tensor([[1.0, 2.0, 5.0, 8.0]]), "scores": torch.tensor([0.75]),
           "labels": torch.tensor([1]), "masks": torch.zeros(1, 10, 12, dtype=torch.bool)}
    det["masks"][0, 2:8, 1:5] = True
    (r,) = detections_to_coco(det, 42, [3, 17])
    assert r["image_id"] == 42 and r["category_id"] == 17 and r["bbox"] == [1.0, 2.0, 4.0, 6.0]
    assert r["score"] == 0.75 and r["segmentation"]["size"] == [10, 12]
    assert mask_utils.area(dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())) == 24
    with pytest.raises(ValueError, match="label 1 but the dataset has 1 classes"):
        detections_to_coco(det, 42, [3])


def test_train_config_is_plain_data(tmp_path):
    """The options stored in checkpoints and config.json are plain json / weights_only-safe values."""
    from refinemask.engine.trainer import _plain

    plain = _cfg(tmp_path).to_plain()
    assert json.loads(json.dumps(plain)) == plain and plain["preset"] == PRESET
    assert _plain((Path("a"), (1, 2))) == ["a", [1, 2]]
