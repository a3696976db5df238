"""What every ``rmbench`` command module builds on: the :class:`Command` pair and the exit-code contract.

A leaf module (the command modules import it; ``refinemask/cli/__init__.py`` composes them), so the CLI package
has no import cycle.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from eval.errors import InputError

__all__ = ["Command", "run_command", "setup_logging", "KNOWN_COMMANDS"]

#: names of the subcommands of this install, filled by ``refinemask/cli/__init__.py`` when the package loads
KNOWN_COMMANDS: set[str] = set()


@dataclass(frozen=True)
class Command:
    """One ``rmbench`` subcommand: ``add_arguments(parser)`` declares its options, ``run(args) -> exit code``."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    epilog: str | None = None


def run_command(name: str, func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
                verbose: bool = False) -> int:
    """Run one command: its exit code; exit 2 with the message for an :class:`~eval.errors.InputError`; exit 1 with
    the traceback for anything else (a bug)."""
    try:
        return int(func(args) or 0)
    except InputError as e:
        if verbose:
            traceback.print_exc()
        print(f"rmbench {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rmbench {name}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"rmbench {name}: internal error (a bug, not your input): please report the traceback above with the "
              f"command that caused it", file=sys.stderr)
        return 1


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
