"""One error type for everything a user can cause, and the exit codes the CLIs share."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # bad input or a failed check: the message says which
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_NO_ENGINE = 3  # s2export: ONNX written, TensorRT missing, so no engine
EXIT_INTERNAL = 70  # a bug in s2trt (EX_SOFTWARE); rerun with --verbose for the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class S2Error(Exception):
    """A problem the user can fix; shown as one line without a traceback."""

    exit_code = EXIT_ERROR


class MissingDependencyError(S2Error):
    """An optional package is not installed; the message names the extra to install."""


def missing(package: str, extra: str, purpose: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"{purpose} needs the Python package '{package}', which is not installed: "
        f"pip install 's2trt[{extra}]'"
    )
