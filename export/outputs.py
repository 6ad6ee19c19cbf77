"""All-or-nothing output: an export writes several files, and a failure must leave none of them.

Each file goes to a temporary name in its target folder first; only when every file is written are
they renamed into place (a rename within a folder is atomic). On any error the temporaries go.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from s2trt.errors import S2Error
from s2trt.meta import FILE_MODE


def check_writable(folder: Path) -> None:
    """Fail early, before minutes of work, when the output folder cannot take files.

    A missing folder is made at commit time (like `runs/` in YOLOv5), so a failed export leaves no
    empty folder behind; here its nearest existing parent must be a writable folder.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise S2Error(f"output folder {folder} is not a folder ({existing} is a file)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise S2Error(f"cannot write to output folder {folder}: {e.strerror or e}") from None


class StagedFiles:
    """Collect (path, bytes) pairs; commit() writes them all or none."""

    def __init__(self) -> None:
        self._files: list[tuple[Path, bytes]] = []

    def add(self, path: Path, data: bytes) -> None:
        self._files.append((Path(path), data))

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self._files]

    def commit(self) -> list[Path]:
        temps: list[tuple[str, Path]] = []
        try:
            for path, data in self._files:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                except OSError as e:
                    raise S2Error(f"cannot write to {path.parent}: {e.strerror or e}") from None
                temps.append((tmp, path))
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.chmod(tmp, FILE_MODE)
                except OSError as e:
                    raise S2Error(f"cannot write {path}: {e.strerror or e}") from None
            for tmp, path in temps:
                os.replace(tmp, path)
        except BaseException:
            for tmp, _ in temps:
                Path(tmp).unlink(missing_ok=True)
            raise
        return self.paths
