"""``rmbench bench`` timer harness (docs/evaluation.md §13 J) and one tiny real CPU run (no speed assertions)."""

from __future__ import annotations

import json
import time

import pytest

from refinemask.cli import main as rmbench_main
from refinemask.engine import timing as bench


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_fake_clock_model_exact_fps_and_warmup_excluded():
    clock = FakeClock()
    events: list[str] = []
    seen: list[int] = []

    def fn(i):  # warm-up iterations are 20x slower, as a cold first call would be
        events.append("call")
        seen.append(i)
        clock.t += 1.0 if i < 5 else 0.05

    times = bench.time_loop(fn, prepare=lambda i: i, n_timed=20, warmup=5,
                            synchronize=lambda: events.append("sync"), clock=clock)
    assert seen == list(range(25))
    assert times == pytest.approx([0.05] * 20)
    s = bench.summarize(times)
    assert s["fps"] == pytest.approx(20.0)
    assert s["latency_ms_p50"] == pytest.approx(50.0) and s["latency_ms_p90"] == pytest.approx(50.0)
    # synchronize brackets every timed call (and not the warm-up calls)
    timed = events[events.index("sync"):]
    assert timed[0] == "sync" and timed[1:] == ["sync", "call", "sync"] * 20
    assert events[:5] == ["call"] * 5


def test_sleeping_model_fps_within_a_few_percent_and_prepare_outside_timer():
    sleep_s = 0.1  # long enough that the OS's wake-up latency on a busy 2-core machine stays ~1 %
    inside: list[float] = []

    def prepare(i):
        time.sleep(0.05)  # "preprocessing" must not be timed
        return i

    def fn(i):
        t0 = time.perf_counter()
        time.sleep(1.0 if i == 0 else sleep_s)  # one slow warm-up
        inside.append(time.perf_counter() - t0)

    times = bench.time_loop(fn, prepare, n_timed=10, warmup=1)
    fps = bench.summarize(times)["fps"]
    assert fps == pytest.approx(1 / sleep_s, rel=0.05)
    # the harness adds (almost) nothing to what the model itself spent: within 2 % (docs/evaluation.md §13 J)
    assert fps == pytest.approx(len(inside[1:]) / sum(inside[1:]), rel=0.02)
    assert max(times) < 0.5  # the warm-up call is excluded


def test_summarize_percentiles_and_errors():
    s = bench.summarize([0.1, 0.2, 0.3, 0.4])
    assert s["fps"] == pytest.approx(4 / 1.0)
    assert s["latency_ms_p50"] == pytest.approx(250.0)
    assert s["latency_ms_p90"] == pytest.approx(370.0)
    with pytest.raises(ValueError):
        bench.time_loop(lambda x: None, lambda i: i, n_timed=0)


def test_bench_runner_with_fake_runner_counts_dets_and_memory():
    import torch

    runner = bench.Runner("fake", prepare=lambda img: img, forward=lambda x: 7, info={"params": 1})
    res = bench.bench_runner(runner, images=[0, 1, 2], n_timed=4, warmup=2, device=torch.device("cpu"), repeats=2)
    d = res.as_dict()
    assert d["images_timed"] == 8 and d["dets_per_image_mean"] == 7 and len(d["fps_per_repeat"]) == 2
    assert d["memory_kind"] == "process_rss_peak_above_baseline"


def test_interleaved_timing_rotates_models_and_keeps_prepare_outside_the_timer():
    import torch

    clock = FakeClock()
    calls = []

    def make(name, cost):
        def prepare(img):
            clock.t += 100.0  # preprocessing: must not be timed
            return img

        def forward(x):
            calls.append((name, x))
            clock.t += cost * (2.0 if x == "slow" else 1.0)  # a slow image slows every model alike
            return 3

        return bench.Runner(name, prepare, forward, info={})

    runners = [make("a", 1.0), make("b", 2.5), make("c", 4.0)]
    res = bench.bench_interleaved(runners, ["w", "x", "slow", "y"], n_timed=3, warmup=1, device=torch.device("cpu"),
                                  repeats=2, clock=clock)
    assert [r.name for r in res] == ["a", "b", "c"]
    assert calls[:3] == [("a", "w"), ("b", "w"), ("c", "w")]  # warm-up, untimed
    timed = calls[3:]
    assert [n for n, _ in timed[:9]] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # order rotates per image
    assert [x for _, x in timed[::3]] == ["x", "slow", "y", "x", "slow", "y"]  # each image seen by all, twice
    for r, cost in zip(res, (1.0, 2.5, 4.0)):
        assert r.times == [cost, 2 * cost, cost] * 2 and r.dets == [3, 3, 3]
        assert len(r.info["fps_per_repeat"]) == 2 and r.peak_memory_mb is None
    assert sum(res[1].times) / sum(res[0].times) == pytest.approx(2.5)


def test_fixed_dets_hook_topk():
    import torch

    from refinemask.detection.roi_heads import topk_detections

    scores = torch.tensor([[0.1, 0.5], [0.3, 0.2], [0.05, 0.4]])
    boxes = torch.arange(3 * 2 * 4, dtype=torch.float32).view(3, 2, 4)
    b, s, lab = topk_detections(boxes, scores, 4)
    assert s.tolist() == pytest.approx([0.5, 0.4, 0.3, 0.2])
    assert lab.tolist() == [1, 1, 0, 1]
    assert torch.equal(b[0], boxes[0, 1]) and torch.equal(b[2], boxes[1, 0])
    assert topk_detections(boxes, scores, 100)[1].numel() == 6


def test_real_tiny_cpu_run_json(capsys, tmp_path):
    """2 bundled images at a reduced scale, random weights, fixed 10 detections, torchvision's Mask R-CNN in the
    same run: checks the JSON, not speed."""
    out = tmp_path / "bench.json"
    rc = rmbench_main(["bench", "--preset", "mask_rcnn_r50_fpn_1x_coco", "--device", "cpu", "--images", "2",
                       "--warmup", "1",
                     "--fixed-dets", "10", "--scale", "320,192", "--compare",
                     "torchvision,refinemask_r50_fpn_1x_coco", "--json", "--flops",
                     "--out", str(out)])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    for key in ("preset", "device", "fps", "latency_ms_p50", "latency_ms_p90", "peak_memory_mb",
                "device_name", "torch", "images", "warmup", "fixed_dets"):
        assert key in obj, key
    assert obj["preset"] == "mask_rcnn_r50_fpn_1x_coco" and obj["device"] == "cpu"
    assert obj["images"] == 2 and obj["fixed_dets"] == 10 and obj["fps"] > 0
    assert obj["dets_per_image_mean"] == 10
    assert obj["model"]["test_scale"] == [320, 192]
    assert json.loads(out.read_text())["fps"] == obj["fps"]
    tv = obj["compare"]["torchvision"]  # timed in the same run, same images, scale and fixed detections
    assert tv["fps"] > 0 and tv["dets_per_image_mean"] == 10 and tv["test_scale"] == [320, 192]
    rm = obj["compare"]["refinemask_r50_fpn_1x_coco"]  # our other preset, same load: latency ratio to --preset
    assert rm["dets_per_image_mean"] == 10 and rm["test_scale"] == [320, 192]
    assert rm["latency_ratio"] == pytest.approx(rm["latency_ms_mean"] / obj["latency_ms_mean"])
    # --flops: RefineMask's semantic head and SFM stages cost more multiply-accumulates than Mask R-CNN's FCN head
    assert rm["gmacs"] > obj["model"]["gmacs"] > 0 and tv["gmacs"] > 0
    assert rm["gmac_ratio"] == pytest.approx(rm["gmacs"] / obj["model"]["gmacs"]) and rm["gmac_ratio"] > 1.2


def test_real_tiny_interleaved_run(capsys):
    rc = rmbench_main(["bench", "--preset", "mask_rcnn_r50_fpn_1x_coco", "--device", "cpu", "--images", "2",
                       "--warmup", "0",
                     "--fixed-dets", "5", "--scale", "320,192", "--compare", "refinemask_r50_fpn_1x_coco",
                     "--interleave"])
    assert rc == 0
    table = capsys.readouterr().out
    rows = [l for l in table.splitlines() if l.startswith("| mask_rcnn") or l.startswith("| refinemask")]
    assert len(rows) == 2 and rows[0].split("|")[5].strip() == "1.00"
    assert all(r.split("|")[6].strip() == "n/a" for r in rows)  # no peak memory with every model resident


def test_count_gmacs_counts_multiply_accumulates():
    import torch

    a, b = torch.randn(64, 128), torch.randn(128, 32)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    runner = bench.Runner("fake", prepare=lambda x: x, forward=lambda x: (a @ b, conv(x)) and 0, info={})
    # 64·128·32 for the product + 16·8·9 per output pixel of a 1×8×10×10 input
    expected = (64 * 128 * 32 + 16 * 8 * 9 * 100) / 1e9
    assert bench.count_gmacs(runner, torch.randn(1, 8, 10, 10)) == pytest.approx(expected)


def test_bad_arguments_exit_2(capsys):
    assert rmbench_main(["bench", "--preset", "no_such_preset", "--device", "cpu"]) == 2
    assert "no_such_preset" in capsys.readouterr().err
    assert rmbench_main(["bench", "--preset", "mask_rcnn_r50_fpn_1x_coco", "--compare", "detectron2"]) == 2


@pytest.mark.mmdet
def test_compare_mmdet_config_in_the_same_run(capsys):
    """``--compare mmdet:<config>`` times mmdet's own PointRend beside ours with the same top-N detections."""
    pytest.importorskip("mmdet", reason="mmdetection not installed: run `make mmdet` to enable this test")
    rc = rmbench_main(["bench", "--preset", "point_rend_r50_fpn_1x_coco", "--device", "cpu", "--images", "1",
                       "--warmup", "1",
                         "--fixed-dets", "5", "--scale", "320,192", "--compare",
                         "mmdet:point-rend_r50-caffe_fpn_ms-1x_coco", "--json"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    mm = obj["compare"]["mmdet:point-rend_r50-caffe_fpn_ms-1x_coco"]
    assert mm["dets_per_image_mean"] == 5 and obj["dets_per_image_mean"] == 5
    assert mm["test_scale"] == [320, 192] and mm["latency_ratio"] > 0
