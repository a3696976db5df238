"""Timing and statistics for the fps protocol (``rmbench bench``; docs/evaluation.md "fps").

Model-agnostic: a :class:`Runner` is ``prepare(image) -> x`` (untimed: decoding, resize, normalise, pad — a data
loader's work) and ``forward(x) -> number of detections`` (timed). :func:`time_loop` times one runner with an
injectable clock, :func:`bench_runner` adds repeats and peak memory, :func:`bench_interleaved` times several
resident runners image by image in rotating order, :func:`count_gmacs` counts multiply-accumulates. The runners
themselves (ours, torchvision, mmdetection) are in :mod:`refinemask.engine.runners`; the command in
``refinemask/cli/bench.py``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.errors import UsageError

__all__ = ["Runner", "BenchResult", "time_loop", "summarize", "bench_runner", "bench_interleaved", "count_gmacs",
           "rss_bytes"]


@dataclass
class Runner:
    """What the timer needs from a model: ``prepare(img) -> x`` (untimed), ``forward(x) -> n_dets`` (timed)."""

    name: str
    prepare: Callable[[Any], Any]
    forward: Callable[[Any], int]
    info: dict = field(default_factory=dict)
    cleanup: Callable[[], None] = lambda: None


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
        raise UsageError(f"need at least one timed iteration, got {n_timed}")
    if warmup < 0:
        raise UsageError(f"warmup must be >= 0, got {warmup}")
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
def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _RSSPeak:
    """Samples the process RSS every ``interval`` s in a thread; ``peak`` in bytes (None off Linux)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak: int | None = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            r = rss_bytes()
            if r is not None and (self.peak is None or r > self.peak):
                self.peak = r

    def __enter__(self) -> _RSSPeak:
        if self.peak is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        r = rss_bytes()
        if r is not None and (self.peak is None or r > self.peak):
            self.peak = r


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

        def on_timed_start(sampler=sampler):
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
        raise UsageError(f"need n_timed >= 1, warmup >= 0, repeats >= 1; got {n_timed}, {warmup}, {repeats}")
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


