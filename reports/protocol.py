"""When a run may fill a paper row: its protocol must match the row's (evaluation set, training, backbone).

A toy run — 30 iterations on 2 images, or an evaluation of 79 bundled images — must never appear as a paper row.
:func:`check_run` reads the ``run`` block of a metrics.json and lists every way it differs from the protocol of a
table's dataset; the table renderer fills a row only from the metric groups with no difference and lists the other
runs under the table as "not comparable", with the reasons.

What a ``run`` block records (written by ``rmbench train``, ``rmbench infer --eval-out``, ``rmbench eval --preset``):

- ``eval_set``: the ground truth scored (:func:`eval.output.split_info`: name, images, sha256);
- ``train``: the training set (name, images), iterations, total batch, epochs completed and the preset's schedule
  epochs, and ``backbone_weights`` (path + sha256, or ``"random"``) — or ``{"declared": ...}`` when results trained
  elsewhere are evaluated with ``rmbench eval --preset P --trained-as-paper``;
- ``speed_protocol``: for the fps column, the bench protocol (``rmbench bench --run-dir``: device, precision, batch,
  weights, what the timer includes).

Sources of the split sizes: COCO 2017 (train 118,287 / val 5,000 images), LVIS v1.0 (train 100,170 / val 19,809),
LVIS v0.5 val (5,000, the AP* ground truth, cocofied), Cityscapes fine (train 2,975 / val 500).
"""

from __future__ import annotations

from typing import Any

__all__ = ["EVAL_SETS", "TRAIN_SETS", "AP_STAR_SET", "group_protocol", "check_run"]

#: table dataset -> (evaluation-set name, images)
EVAL_SETS = {"coco": ("coco_val2017", 5000), "lvis": ("lvis_v1_val", 19809), "cityscapes": ("cityscapes_val", 500)}
#: table dataset -> (training-set name, images)
TRAIN_SETS = {"coco": ("coco_train2017", 118287), "lvis": ("lvis_v1_train", 100170),
              "cityscapes": ("cityscapes_train", 2975)}
#: the AP* ground truth: LVIS v0.5 val reduced to the COCO classes (all its images)
AP_STAR_SET = ("lvis_v0.5_val_cocofied", 5000)

#: metric group -> which protocol gates it: "model" (evaluation set + training), "ap_star" (the AP* ground truth +
#: training), "train" (training only: numbers from an evaluation server), "speed" (the fps protocol)
_GROUP_PROTOCOL = {"ap_star": "ap_star", "test_dev": "train", "speed": "speed"}


def group_protocol(group: str) -> str:
    """Which protocol a metric group needs (see :data:`_GROUP_PROTOCOL`; everything else is ``"model"``)."""
    return _GROUP_PROTOCOL.get(group, "model")


def _set_reasons(what: str, key: str, got: Any, want: tuple[str, int]) -> list[str]:
    name, images = want
    if not isinstance(got, dict):
        return [f"{what} not recorded (metrics.json has no run.{key})"]
    out = []
    n = got.get("images")
    if got.get("name") != name:
        out.append(f"{what} is {got.get('name')!r}, not {name}")
    if n != images:
        out.append(f"{what} has {n} images, not {images:,}")
    return out


def _train_reasons(train: Any, want: tuple[str, int]) -> list[str]:
    if not isinstance(train, dict):
        return ["training not recorded (no run.train; evaluate results trained elsewhere with "
                "`rmbench eval --preset P --trained-as-paper` to declare the paper's protocol)"]
    if train.get("declared"):
        return []
    out = []
    name, images = want
    n_img, it = train.get("images"), train.get("iterations")
    epochs, sched = train.get("epochs"), train.get("schedule_epochs")
    if train.get("name") != name or n_img != images:
        out.append(f"trained {it} iterations on {n_img} images of {train.get('name')!r} (the paper: {name}, "
                   f"{images:,} images)")
    elif epochs is None or sched is None or epochs < 0.99 * sched:
        out.append(f"trained {it} iterations = {epochs if epochs is None else round(epochs, 2)} epochs "
                   f"(the preset's schedule: {sched} epochs)")
    bw = train.get("backbone_weights")
    if bw is None or bw == "random":
        out.append("backbone randomly initialised (the paper starts from ImageNet weights: --backbone-weights)")
    return out


def _speed_reasons(speed: Any) -> list[str]:
    if not isinstance(speed, dict):
        return ["fps protocol not recorded"]
    out = []
    if speed.get("batch_size", 1) != 1:
        out.append(f"batch {speed.get('batch_size')} (the paper: 1)")
    if speed.get("precision", "fp32") != "fp32":
        out.append(f"precision {speed.get('precision')} (the paper: fp32)")
    return out


def check_run(run: dict[str, Any], dataset: str, groups: list[str]) -> dict[str, list[str]]:
    """Why the run's numbers of ``groups`` may not fill a row of a ``dataset`` table.

    Args:
        run: the metrics.json ``run`` block ({} when absent).
        dataset: the table's dataset (``"coco"``, ``"lvis"``, ``"cityscapes"``).
        groups: the metric groups the row would take from the run (``speed`` is checked against
            ``run.speed_protocol``, written by ``rmbench bench --run-dir``).
    Returns:
        {group: [reasons]} with an empty list for every comparable group.
    """
    out: dict[str, list[str]] = {}
    train_want = TRAIN_SETS.get(dataset)
    for g in groups:
        kind = group_protocol(g)
        if kind == "speed":
            out[g] = _speed_reasons(run.get("speed_protocol"))
            continue
        reasons: list[str] = []
        if kind == "model" and dataset in EVAL_SETS:
            reasons += _set_reasons("evaluation set", "eval_set", run.get("eval_set"), EVAL_SETS[dataset])
        if kind == "ap_star":
            reasons += _set_reasons("AP* ground truth", "lvis_eval_set", run.get("lvis_eval_set"), AP_STAR_SET)
        if train_want is not None:
            reasons += _train_reasons(run.get("train"), train_want)
        out[g] = reasons
    return out
