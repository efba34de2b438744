"""The ``fastsac`` command line: a thin layer over the public API.

Each sub-command lives in ``fastsac/cli/<name>.py`` and provides
``add_parser(subparsers)`` and ``run(args) -> int``. Heavy modules are imported
inside ``run`` so that ``fastsac --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__

# Order shown in --help. A command whose module is absent is skipped.
COMMANDS = ["analyze", "evaluate", "demo", "simulate", "train", "report", "bench",
            "montage", "watch", "serve", "consensus", "users"]

from ._common import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK  # noqa: F401

#: No sub-command given (help printed).
EXIT_USAGE = 64


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit 2), pointing at --help."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastsac",
        description="Detect and quantify single metal atoms in HAADF-STEM images.")
    parser.add_argument("--version", action="version", version=f"fastsac {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"fastsac.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"fastsac.cli.{name}":
                continue
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
        if "-v" not in p._option_string_actions:
            # -v after the sub-command too; SUPPRESS keeps a -v given before it.
            p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                           help="more log output (-vv for debug)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (2, one line printed) or --help/--version (0)
        return int(exc.code or 0)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        # tifffile logs its own warnings about broken files; fastsac's one line says it.
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    args._argv = list(sys.argv[1:] if argv is None else argv)
    from ..errors import FastsacInputError

    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FastsacInputError, MemoryError, OSError) as exc:
        # Last resort: an input, memory or file-system problem a command did not
        # catch itself is still one line (the traceback with -vv).
        from ._common import describe_error

        logging.getLogger("fastsac").debug("uncaught", exc_info=True)
        print(f"fastsac {args.command}: {describe_error(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
