"""What every console script does around its main(): logging, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

from s2trt.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED, S2Error, Terminated
from s2trt.publish import forget_inputs
from s2trt.text import redact_credentials

log = logging.getLogger("s2trt")


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and a traceback on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


class _RedactingFormatter(logging.Formatter):
    """The last net under every message: no URL's user:password@ reaches the log, whichever module
    forgot to redact its source."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_credentials(super().format(record))


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(message)s"))
    root = logging.getLogger("s2trt")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


# Set when a signal asks the command to end: a thread waiting on something outside (a pipe with no
# reader) gives up instead of holding the run past it.
STOPPING = threading.Event()
# Signals that end a command like Ctrl-C, finishing its outputs: SIGTERM (docker stop, systemd,
# timeout) and SIGHUP (the terminal closed) as Terminated, which shells report as 128 + N.
_TERMINATING = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated (a KeyboardInterrupt) in the main
    thread, so what finishes its outputs on Ctrl-C does so for docker stop, systemd, timeout and a
    closed terminal too; each of them and Ctrl-C also set STOPPING, for the other threads.

    Further signals are ignored while the outputs are finished (SIGKILL remains the hard stop). A
    signal ignored by whoever started the process stays ignored, as shells do."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOPPING.clear()

    def raise_terminated(signum: int, frame: object) -> None:
        STOPPING.set()
        for s in (*_TERMINATING, signal.SIGINT):
            if signal.getsignal(s) in (raise_terminated, raise_interrupt):
                signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    def raise_interrupt(signum: int, frame: object) -> None:
        STOPPING.set()
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in (*_TERMINATING, signal.SIGINT)}
    for s, handler in previous.items():
        if s == signal.SIGINT:
            if handler is signal.default_int_handler:  # not one someone else installed or ignored
                signal.signal(s, raise_interrupt)
        elif handler != signal.SIG_IGN:
            signal.signal(s, raise_terminated)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
        print(redact_credentials(f"{prog}: error: {e}"), file=sys.stderr)
        return e.exit_code
    except Terminated as e:
        signum = e.args[0] if e.args else signal.SIGTERM
        print(f"{prog}: {'hung up' if signum == signal.SIGHUP else 'terminated'}", file=sys.stderr)
        return EXIT_TERMINATED if signum == signal.SIGTERM else 128 + signum
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug in s2trt, not in the user's input
        if verbose:
            log.exception("%s: internal error", prog)
        print(redact_credentials(f"{prog}: internal error: {type(e).__name__}: {e} (rerun with "
                                 "--verbose for the traceback and report it)"), file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        forget_inputs()  # the inputs this command guarded (s2trt.publish) are no one's after it
