"""Where the bundled data lives: ``<repo>/data`` (or ``$RMBENCH_DATA``), never ``../shared``."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import MissingFileError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The bundled data folder (``$RMBENCH_DATA`` overrides ``<repo>/data``).

    Raises:
        FileNotFoundError: the folder is missing (e.g. a wheel install without the repository's data/).
    """
    d = Path(os.environ.get("RMBENCH_DATA", PROJECT_ROOT / "data"))
    if not (d / "coco_mini").is_dir():
        raise MissingFileError(
            f"bundled data not found at {d} (expected {d / 'coco_mini'}); run from a clone of the repository "
            f"or set RMBENCH_DATA to its data/ folder")
    return d


def bundled(*parts: str) -> Path:
    """A path inside the bundled data folder, which must exist.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    p = data_dir().joinpath(*parts)
    if not p.exists():
        raise MissingFileError(f"bundled file missing: {p}")
    return p
