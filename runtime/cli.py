"""s2infer (placeholder until the runtime issue lands)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from s2trt.cli import add_verbosity, run_main


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="s2infer", description="Run YOLOv5-S2 detection on images, videos, cameras and streams.")
    p.add_argument("source", help="image, folder, video, camera index or URL")
    add_verbosity(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    print("s2infer: not implemented yet")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("s2infer", parse, _main, argv)
