"""s2export (placeholder until the export issue lands)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from s2trt.cli import add_verbosity, run_main


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="s2export",
                                description="Export a YOLOv5-S2 checkpoint to ONNX and TensorRT.")
    p.add_argument("weights", help="YOLOv5 checkpoint (.pt)")
    add_verbosity(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    print("s2export: not implemented yet")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("s2export", parse, _main, argv)
