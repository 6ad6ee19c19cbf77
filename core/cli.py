"""What every console script does around its main(): logging, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from s2trt.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, S2Error

log = logging.getLogger("s2trt")


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and a traceback on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("s2trt")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def run_main(prog: str, parse: Callable[[Sequence[str] | None], argparse.Namespace],
             main: Callable[[argparse.Namespace], int], argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn every failure into one line on stderr and an exit code."""
    args = parse(argv)
    verbose = getattr(args, "verbose", False)
    setup_logging(verbose, getattr(args, "quiet", False))
    try:
        return main(args)
    except S2Error as e:
        if verbose:
            log.exception("%s: error", prog)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug in s2trt, not in the user's input
        if verbose:
            log.exception("%s: internal error", prog)
        print(f"{prog}: internal error: {type(e).__name__}: {e} (rerun with --verbose for the "
              "traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL
