"""Training / inference engine: the train loop (SGD, warm-up, step schedule, AMP, clipping, exact resume),
atomic ``weights_only`` checkpoints, torchrun DDP helpers, sharded inference to COCO results, evaluation through
``eval/``, the overfit recipe that proves the whole path on real images, and the fps benchmark's timer
(``timing.py``) and model runners (``runners.py``).

Heavy modules are imported lazily by their users; this package only re-exports names.
"""

import importlib

#: public name -> submodule; resolved on first access (PEP 562) so importing the light modules (``timing``,
#: ``runners``: the CLI does to build its parser) does not import torch and the whole model stack.
_EXPORTS = {
    "CHECKPOINT_FORMAT": "checkpoint", "CheckpointError": "checkpoint", "atomic_torch_save": "checkpoint",
    "load_checkpoint": "checkpoint", "load_model_state": "checkpoint",
    "DistInfo": "distributed", "init_distributed": "distributed",
    "detections_to_coco": "inference", "evaluate_results": "inference", "inference_on_dataset": "inference",
    "run_info": "inference",
    "TrainConfig": "trainer", "Trainer": "trainer", "WarmupStepSchedule": "trainer", "train": "trainer",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
