"""Where a run's outputs go, decided before anything is written: the run folder (exp, exp2, ...) or
`-o`, the JSON Lines file, each source's file name in the folder; and the refusal of any output that
would overwrite something the run reads.

Nothing is created here: folders appear with the first file written into them (runtime/outputs/sinks.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from s2trt.detect.media import IMAGE_EXTS, VIDEO_EXTS
from s2trt.errors import UsageError
from s2trt.publish import guard_inputs
from s2trt.runtime.inputs.sources import Item, SourceKind
from s2trt.runtime.inputs.streams import output_names
from s2trt.runtime.outputs.in_place import writes_in_place
from s2trt.runtime.outputs.sinks import WRITABLE_IMAGE_EXTS, Sinks, increment_dir, output_name
from s2trt.runtime.request import OutputOptions


@dataclass(frozen=True)
class OutputPlan:
    """The paths a run writes: `save_dir` (the run folder, None without one), `out_file` (-o naming
    one file), `jsonl` (None without --save-json) and each source's file name in the folder."""

    save_dir: Path | None
    out_file: Path | None
    jsonl: Path | None
    file_names: dict[str, str] = field(default_factory=dict)


def plan_outputs(opts: OutputOptions, items: Sequence[Item]) -> OutputPlan:
    """The paths from --project/--name, -o and --save-json, for these inputs."""
    wants_dir = opts.save or (opts.save_json == "")
    save_dir = out_file = None
    if opts.output:
        out = Path(opts.output)
        names_a_file = out.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS
        if len(items) == 1 and names_a_file:
            _check_output_kind(out, items[0][0])
            out_file = out
        elif names_a_file and not out.is_dir():  # a folder or glob gives several files as well
            raise UsageError(f"-o {out} names one file, but {len(items)} inputs give a file each: "
                             "name a folder")
        elif wants_dir:
            save_dir = increment_dir(out.parent, out.name, exist_ok=True)
    elif wants_dir:
        save_dir = increment_dir(opts.project, opts.name, opts.exist_ok)
    jsonl = None
    if opts.save_json:
        jsonl = Path(opts.save_json)
    elif opts.save_json is not None:
        jsonl = out_file.with_suffix(".jsonl") if out_file else save_dir / "predictions.jsonl"
    return OutputPlan(save_dir, out_file, jsonl, output_names(items))


def _check_output_kind(out: Path, kind: SourceKind) -> None:
    """-o names one file: it must be the kind of file the input gives (never renamed behind the user)."""
    ext = out.suffix.lower()
    if kind == SourceKind.IMAGE and ext not in IMAGE_EXTS:
        raise UsageError(f"-o {out}: the input is an image, so the output is an annotated image: name it "
                         f"{'/'.join(sorted(WRITABLE_IMAGE_EXTS))}")
    if kind == SourceKind.IMAGE and ext not in WRITABLE_IMAGE_EXTS:
        raise UsageError(f"-o {out}: OpenCV cannot write {ext} images: name it "
                         f"{'/'.join(sorted(WRITABLE_IMAGE_EXTS))}")
    if kind != SourceKind.IMAGE and ext in IMAGE_EXTS:
        raise UsageError(f"-o {out}: the input is a {kind}, so the output is an annotated video: name it "
                         ".mp4 (or .avi, .mkv, .ts)")


def check_outputs(opts: OutputOptions, plan: OutputPlan, items: Sequence[Item],
                  inputs: Sequence[tuple[Path, str]]) -> None:
    """Refuse any output that is one of `inputs` (each file the run reads, with what it is to the run:
    "the input", "the model", ...), and guard those inputs until the run ends (s2trt.publish)."""
    guard_inputs(inputs)  # and at publish time: nothing this run writes replaces one of them
    save_dir, out_file, jsonl = plan.save_dir, plan.out_file, plan.jsonl
    outputs = [("-o", out_file)] if out_file else []
    if jsonl is not None:
        outputs.append(("--save-json", jsonl))
    if save_dir is not None and opts.save:
        flag = "-o" if opts.output else "--project/--name"
        outputs += [(flag, save_dir / (plan.file_names.get(p) or output_name(kind, p))) for kind, p in items]
    for flag, out in outputs:
        if writes_in_place(out):
            continue
        for path, what in inputs:
            if _same_file(out, path):
                shown = out if flag == "--save-json" or out == out_file else out.parent
                raise UsageError(f"{flag} {shown} would overwrite {what} {path}: choose another output")
    if out_file is not None and out_file.is_dir():
        raise UsageError(f"-o {out_file} is a folder: name a file to write")
    if jsonl is not None and jsonl.is_dir():
        raise UsageError(f"--save-json {jsonl} is a folder: name a file (or give no PATH for "
                         "predictions.jsonl in the output folder)")
    if out_file is not None and jsonl is not None and _same_file(out_file, jsonl):
        raise UsageError(f"--save-json {jsonl} is the -o file: choose another path for one of them")


def open_sinks(opts: OutputOptions, plan: OutputPlan, names: Sequence[str], concurrent: bool) -> Sinks:
    """The sinks that write the planned outputs; `concurrent`: the sources' frames come interleaved."""
    return Sinks(names, plan.save_dir, plan.out_file, opts.save, plan.jsonl, opts.show, opts.line_width,
                 opts.hide_labels, opts.hide_conf, plan.file_names, concurrent=concurrent)


def _same_file(a: Path, b: Path) -> bool:
    try:  # both exist: the same inode, whatever the links
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()
