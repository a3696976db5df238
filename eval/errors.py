"""The project's input errors: the only exceptions ``rmbench`` reports as exit code 2 without a traceback.

Every other exception is a bug and prints its traceback (exit 1). These live at the bottom of the house (``eval``
imports nothing of ours) so that every layer can raise them.

- :class:`InputError` — something the user gave (a file, a record, an option) is wrong; the message names it and
  the fix. A ``ValueError``, so callers that catch ``ValueError`` keep working.
- :class:`UsageError` — an option or a combination of options is wrong (``--device cuda`` without CUDA, an unknown
  preset, a table without that preset).
- :class:`MissingFileError` — a file or folder the user named (or the bundled data) does not exist; also a
  ``FileNotFoundError``.
"""

from __future__ import annotations

__all__ = ["InputError", "UsageError", "MissingFileError"]


class InputError(ValueError):
    """Bad user input; the message names the file or option, the record and the fix."""


class UsageError(InputError):
    """A wrong option or combination of options."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist (or is not readable)."""
