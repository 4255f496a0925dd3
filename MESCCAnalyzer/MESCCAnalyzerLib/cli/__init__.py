"""The ``mescc`` command line.

Each sub-command lives in its own module of this package and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args, term) -> int``. Errors of the engine
(:class:`~MESCCAnalyzerLib.errors.MESCCError`) become one line on stderr and exit status 2;
nothing is written for a failed command (writers are atomic).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import Cancelled, MESCCError
from .terminal import Terminal

# Order shown in ``mescc --help``; a module missing here is simply not offered.
COMMANDS = [
    "info",
    "suv",
    "phantom",
    "register",
    "segment",
    "metrics",
    "analyze",
    "demo",
    "serve",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors also exit 2, in one line
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _load_commands():
    modules = {}
    for name in COMMANDS:
        try:
            modules[name] = importlib.import_module(f"{__name__}.{name}_cmd")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}_cmd":
                raise
    return modules


def build_parser():
    parser = _Parser(
        prog="mescc",
        description="MESCC Analyzer: metastatic epidural spinal cord compression analysis.",
    )
    parser.add_argument("--version", action="version", version=f"mescc {__version__}")
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress output (for scripts)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = _load_commands()
    for name, module in modules.items():
        p = sub.add_parser(
            name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        p.add_argument(
            "--quiet",
            "-q",
            action="store_true",
            default=argparse.SUPPRESS,
            help="no progress output",
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: return their status
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    term = Terminal(quiet=getattr(args, "quiet", False))
    try:
        return int(args._module.run(args, term) or 0)
    except Cancelled as exc:
        term.abort()
        print(f"mescc {args.command}: {exc}", file=sys.stderr)
        return 130
    except MESCCError as exc:
        term.abort()
        print(f"mescc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        term.abort()
        print(f"mescc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
