"""Shared test settings: GPU / TensorRT marks that skip with a reason where the hardware is absent.

Under CI (`CI=true`, as `.ci/run` runs) only those two may skip: a test that skips for anything else (a
missing ffmpeg, dockerd, tritonserver, TensorRT headers, a wheel that could not be fetched) fails with
its reason, so a green CI cannot hide a check that never ran. The allowed skips are listed at the end.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess

import pytest


@functools.cache
def gpu_reason() -> str | None:
    """None when an NVIDIA GPU is usable, else why not."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU (nvidia-smi not found)"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi failed: {e}"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return "nvidia-smi lists no GPU"
    return None


# The only prerequisites a CI machine here cannot have: an NVIDIA GPU and the TensorRT library.
ALLOWED_IN_CI = ("gpu", "tensorrt")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _may_skip(item: pytest.Item) -> bool:
    return any(mark in item.keywords for mark in ALLOWED_IN_CI)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not _may_skip(item) and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"CI=true: skipped, but only GPU/TensorRT tests may skip in CI: {_reason(report)}"


# Module-level skips (importorskip) seen under CI; failing them at collection would interrupt the run.
_ci_collect_skips: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci():
        _ci_collect_skips.append(f"{collector.nodeid}: {_reason(report)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _ci_collect_skips and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _ci_collect_skips:
        terminalreporter.section("CI=true: files skipped whole, which only GPU/TensorRT tests may do")
        for line in _ci_collect_skips:
            terminalreporter.write_line(line)
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if isinstance(r, pytest.TestReport)]
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for report in skipped:
        reason = _reason(report)
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section("skip reasons")
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{n:5d}  {reason}")


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module: two OpenMP threads on a shared 2-core machine spin against
    each other (measured 10x slower under load), and the demo-sized models need no more."""
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _s2trt_logger_restored():
    """CLIs run in-process set up the `s2trt` logger (level, handlers, no propagation); restoring it
    keeps later tests that capture logs independent of the order tests run in."""
    log = logging.getLogger("s2trt")
    saved = (log.level, list(log.handlers), log.propagate)
    yield
    log.setLevel(saved[0])
    log.handlers[:] = saved[1]
    log.propagate = saved[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("tensorrt") is None:
        for item in items:
            if "tensorrt" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="TensorRT's Python module is not installed"))
    reason = gpu_reason()
    if reason is None:
        return
    require = os.environ.get("S2TRT_REQUIRE_GPU") == "1"
    for item in items:
        if "gpu" in item.keywords:
            if require:
                item.add_marker(pytest.mark.xfail(reason=f"S2TRT_REQUIRE_GPU=1 but {reason}",
                                                  strict=True, run=False))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))
