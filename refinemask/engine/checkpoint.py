"""Checkpoints: atomic writes, ``weights_only=True`` loads, and errors that name the file and the keys.

A training checkpoint is a dict of tensors and plain python values only (so ``torch.load(weights_only=True)``
accepts it; nothing is unpickled as code):

============  ==========================================================================================
key           value
============  ==========================================================================================
``format``    ``"refinemask-bench/checkpoint-v1"``
``model``     the model's ``state_dict()`` (DDP ``module.`` prefix stripped)
``optimizer`` ``optimizer.state_dict()``; ``scheduler``: ``LambdaLR.state_dict()``; ``scaler``: AMP scaler
``iter``      completed iterations; ``epoch`` / ``sampler``: the sampler position (plain ints)
``rng``       python / numpy / torch (CPU and CUDA) generator states, as tensors and lists
``preset``    preset name; ``classes``: dataset category ids in label order; ``run``: the run block
``config``    the training options (str / int / float / bool / None / lists)
============  ==========================================================================================

Writes go to a temporary file in the same folder, are flushed and fsync'ed, then ``os.replace``'d over the
target: a crash leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eval.errors import InputError
from eval.io import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT", "CheckpointError", "atomic_torch_save", "load_checkpoint", "load_model_state",
    "unwrap_model", "get_rng_state", "set_rng_state", "check_preset",
]

CHECKPOINT_FORMAT = "refinemask-bench/checkpoint-v1"


class CheckpointError(InputError):
    """A checkpoint that cannot be used: missing, corrupt/truncated, or not matching the model."""


def check_preset(ckpt: dict[str, Any], preset_name: str, path: str | os.PathLike, *, required: bool = False) -> None:
    """Refuse a checkpoint trained with another preset than ``preset_name``.

    Args:
        ckpt: what :func:`load_checkpoint` returned. ``required``: a bare state dict (no ``preset`` entry) is
            refused too (``--resume``); otherwise it is accepted.
    Raises:
        CheckpointError: naming the file, both presets and the ``--preset`` that fixes it.
    """
    trained = ckpt.get("preset")
    if trained == preset_name or (trained is None and not required):
        return
    raise CheckpointError(f"{path} was trained with preset {trained!r}, not {preset_name!r}. "
                          f"Fix: pass --preset {trained}")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP / DataParallel wrappers."""
    return model.module if hasattr(model, "module") and isinstance(model, (nn.parallel.DistributedDataParallel,
                                                                             nn.DataParallel)) else model


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace`` it over ``path``
    (:func:`eval.io.atomic_write`): an interrupted save never leaves a truncated checkpoint."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return path


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike, link: bool = False) -> Path:
    """Make ``dst`` a copy of ``src`` through a temporary name + ``os.replace`` (readers never see a partial file).

    ``link=True`` hard-links instead of copying when the filesystem allows (``latest.pth`` then costs no space;
    deleting the ``iter_N.pth`` it came from later leaves it intact).
    """
    dst = Path(dst)
    if link:
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
            return dst
        except OSError:  # no hard links here (another filesystem, ...): copy instead
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return dst


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with clear errors.

    A bare state dict (a mapping of tensors, e.g. a released model file) is accepted and returned as
    ``{"model": state_dict}``.

    Raises:
        CheckpointError: the file does not exist, is truncated or corrupt, holds non-weight objects, or is not a
            dict. The message names the file and suggests a fix.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}. Fix: check the path (training writes "
                              f"<work-dir>/latest.pth and <work-dir>/iter_N.pth)")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {p} is empty (0 bytes). Fix: delete it and use an earlier iter_N.pth")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        glob = re.search(r"Unsupported global: GLOBAL (\S+)", msg)
        if glob:
            raise CheckpointError(
                f"checkpoint {p} holds objects that weights_only=True refuses (a pickled {glob.group(1)}). "
                f"Fix: re-save it with tensors and plain python values only (state dicts)") from e
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\n\n", msg, re.S)
        raise CheckpointError(
            f"checkpoint {p} is corrupt or truncated ({detail.group(1).strip() if detail else msg.splitlines()[0]}). "
            f"Fix: delete it and resume from an earlier iter_N.pth, or re-download it") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = (str(e).splitlines() or [""])[0].split(". ")[0][:200]
        raise CheckpointError(
            f"checkpoint {p} is corrupt or truncated ({type(e).__name__}: {first}). "
            f"Fix: delete it and resume from an earlier iter_N.pth, or re-download it") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {p} holds a {type(obj).__name__}, not a dict. "
                              f"Fix: pass a file written by `rmbench train` or a state dict")
    if "model" not in obj:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {"model": obj}
        if "state_dict" in obj and isinstance(obj["state_dict"], dict):
            return {**obj, "model": obj["state_dict"]}
        raise CheckpointError(f"checkpoint {p} has no 'model' state dict (keys: {sorted(obj)[:10]}). "
                              f"Fix: pass a file written by `rmbench train`")
    return obj


def _fmt_keys(keys: list[str], limit: int = 12) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike = "<memory>",
                     strict: bool = True) -> dict[str, list[str]]:
    """Load ``state`` into ``model`` after checking keys and shapes ourselves.

    Returns ``{"missing": [...], "unexpected": [...]}`` (empty when strict succeeds).

    Raises:
        CheckpointError: shape mismatches (always), or missing / unexpected keys when ``strict``; the message
            names the file, lists the keys and says what to check (usually the ``--preset``).
    """
    model = unwrap_model(model)
    if any(k.startswith("module.") for k in state):
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape]
    problems = []
    if shapes:
        problems.append(f"shape mismatches: {_fmt_keys(shapes)}")
    if strict and missing:
        problems.append(f"missing keys: {_fmt_keys(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_fmt_keys(unexpected)}")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not match the model ({type(model).__name__}): "
                              + "; ".join(problems)
                              + ". Fix: use the --preset the checkpoint was trained with (same backbone, mask head "
                                "and number of classes)")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return {"missing": missing, "unexpected": unexpected}


# ------------------------------------------------------------------------------------------------------------
# RNG states as tensors / plain lists (weights_only-safe)
def get_rng_state() -> dict[str, Any]:
    """States of python ``random``, numpy's legacy global generator and torch (CPU + every CUDA device)."""
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": [int(py[0]), [int(x) for x in py[1]], py[2]],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`get_rng_state`'s output."""
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(x) for x in py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu() if state["torch"].device.type != "cpu" else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            log.warning("checkpoint has CUDA RNG states for %d devices, this machine has %d: not restored",
                        len(cuda), torch.cuda.device_count())
