"""The ``sr3`` command line.

Each sub-command lives beside the code it drives and registers itself with
``add_parser(subparsers)``; this file only collects them and turns a
:class:`~sr3.errors.UserError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .errors import UserError

# Modules that provide a sub-command (each defines add_parser(subparsers)).
COMMAND_MODULES = [
    "sr3.train",        # sr3 train
    "sr3.pipeline",     # sr3 upscale
    "sr3.evaluate",     # sr3 evaluate
    "sr3.cascade",      # sr3 generate, sr3 sweep
    "sr3.study.cli",    # sr3 study create|serve|report
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sr3", description="Diffusion super-resolution (SR3) and cascades (CDM).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # sub-command not built yet
                continue
            raise
        module.add_parser(sub)
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
