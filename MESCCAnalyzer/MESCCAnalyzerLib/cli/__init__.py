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
from ..errors import Cancelled, MESCCError, printable
from .terminal import Terminal

# Order shown in ``mescc --help``; a module missing here is simply not offered.
COMMANDS = [
    "info",
    "suv",
    "adc",
    "phantom",
    "register",
    "segment",
    "metrics",
    "analyze",
    "export",
    "demo",
    "batch",
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


def _streams_never_fail() -> None:
    """A terminal that cannot show a character (PYTHONIOENCODING=ascii) gets it escaped."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _os_error_line(exc: OSError) -> str:
    """One line for an operating-system error (permission, missing file, full disk...)."""
    where = exc.filename if exc.filename is not None else None
    reason = exc.strerror or str(exc)
    return printable(f"{where}: {reason}" if where is not None else reason)


def main(argv: list[str] | None = None) -> int:
    _streams_never_fail()
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
    except OSError as exc:
        term.abort()
        print(f"mescc {args.command}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        term.abort()
        print(f"mescc {args.command}: error: not enough memory for these inputs", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        term.abort()
        print(f"mescc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
