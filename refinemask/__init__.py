"""refinemask-bench: RefineMask (CVPR 2021) and baselines on a shared two-stage trunk.

``build_model``, ``list_presets`` and ``count_parameters`` are loaded on first use (PEP 562), so importing
``refinemask`` (e.g. for the CLI's eval/report commands) does not import torch.
"""

__all__ = ["build_model", "count_parameters", "list_presets"]


def __getattr__(name: str):
    if name in __all__:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'refinemask' has no attribute {name!r}")
