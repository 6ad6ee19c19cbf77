"""One error type for everything a user can cause, and the exit codes the CLIs share."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # bad input or a failed check: the message says which
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_NO_ENGINE = 3  # s2export: ONNX written, TensorRT missing, so no engine
EXIT_INTERNAL = 70  # a bug in s2trt (EX_SOFTWARE); rerun with --verbose for the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
EXIT_TERMINATED = 143  # SIGTERM (docker stop, systemd, timeout), as shells report it


class S2Error(Exception):
    """A problem the user can fix; shown as one line without a traceback."""

    exit_code = EXIT_ERROR


class UsageError(S2Error):
    """A command line that parses but cannot work (an output onto an input): exit 2, like argparse."""

    exit_code = EXIT_USAGE


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by `s2trt.cli.sigterm_as_interrupt`.

    A KeyboardInterrupt, so every place that finishes its outputs on Ctrl-C does so on SIGTERM too."""


class MissingDependencyError(S2Error):
    """An optional package is not installed; the message names the extra to install."""


def missing(package: str, extra: str, purpose: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"{purpose} needs the Python package '{package}', which is not installed: "
        f"pip install 's2trt[{extra}]'"
    )
