"""The ``sr3`` command line.

Each sub-command lives in :mod:`sr3.commands`
and registers itself with ``add_parser(subparsers)``; this file only collects them
and turns a :class:`~sr3.errors.UserError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from .commands import demo, evaluate, generate, study, sweep, train, upscale
from .errors import UserError

COMMANDS = (train, upscale, evaluate, generate, sweep, study, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sr3", description="Diffusion super-resolution (SR3) and cascades (CDM).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None):
    return f"sr3: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as e:
        print(f"sr3: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sr3: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
