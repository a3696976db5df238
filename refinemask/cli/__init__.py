"""``rmbench``: the harness's command line, and the one composition root of the house.

This package is the only place that imports every layer: ``eval`` (the evaluator), ``reports`` (tables, plots,
regression, the reproduction plan), the model package and the ``baselines`` plug-in (imported here, which registers
the PointRend and HTC presets and builders). One module per command group, each command an ``add_arguments`` /
``run`` pair (:class:`Command`):

- :mod:`.evaluate`  ``eval``, ``cocofy-lvis``, ``cityscapes-to-coco``, ``bench-eval``
- :mod:`.analysis`  ``analyze``, ``compare``
- :mod:`.reporting` ``report``, ``regress``, ``reproduce``
- :mod:`.models`    ``train``, ``infer``, ``models``
- :mod:`.convert`   ``convert`` (checkpoints of torchvision, detectron2, mmdet, official RefineMask)
- :mod:`.bench`     ``bench`` (the fps protocol)
- :mod:`.demo`      ``demo`` (the main job)

Modules import their heavy dependencies (torch, pycocotools) inside ``run``, so ``rmbench eval`` and ``rmbench
report`` start without torch.

Exit codes: 0 success; 2 bad input or usage (:class:`eval.errors.InputError`: the message names the file, the
record and the fix; argparse's own usage errors too); 1 anything else, which is a bug and prints its traceback.
``-v`` logs at DEBUG and prints the traceback of input errors too.
"""

from __future__ import annotations

import argparse

import baselines  # noqa: F401  (registers the PointRend / HTC presets and builders with refinemask.registry)

from . import analysis, bench, convert, demo, evaluate, models, reporting
from .command import KNOWN_COMMANDS, Command, run_command, setup_logging

__all__ = ["Command", "build_parser", "commands", "main"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("refinemask-bench")
    except PackageNotFoundError:  # pragma: no cover (running from a source tree without an install)
        return "unknown"


def commands() -> list[Command]:
    """Every subcommand, in ``rmbench --help`` order."""
    return [*evaluate.COMMANDS, *analysis.COMMANDS, demo.COMMAND, *reporting.COMMANDS, *models.COMMANDS,
            convert.COMMAND, bench.COMMAND]


KNOWN_COMMANDS.update(c.name for c in commands())  # what `reproduce` may run, also when called from Python


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmbench", description="The RefineMask benchmark harness: evaluate, train, "
                                     "time and report instance segmentation (rmbench COMMAND --help).",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging; tracebacks for input errors too")
    parser.add_argument("--version", action="version", version=f"rmbench {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for c in commands():
        p = sub.add_parser(c.name, help=c.help, description=c.description, epilog=c.epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_arguments(p)
        p.set_defaults(func=c.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``rmbench ARGV``: the exit code (see the module docstring)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return run_command(args.command, args.func, args, args.verbose)
