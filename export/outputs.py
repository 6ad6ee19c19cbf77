"""All-or-nothing output: an export writes several files, and a failure must leave none of them.

Each file goes to an exclusively created temporary name in its target folder first
(s2trt.publish: a link planted there is never followed); only when every file is written are they
renamed into place (a rename within a folder is atomic). On any error the temporaries go.
"""

from __future__ import annotations

import os
from pathlib import Path

from s2trt.errors import S2Error
from s2trt.publish import exclusive_temp, publish, refuse_input


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
        temps: list[tuple[Path, Path]] = []
        try:
            for path, data in self._files:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise S2Error(f"cannot write to {path.parent}: {e.strerror or e}") from None
                fd, tmp = exclusive_temp(path)
                temps.append((tmp, path))
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                except OSError as e:
                    raise S2Error(f"cannot write {path}: {e.strerror or e}") from None
            for _, path in temps:  # all refused or none: before the first rename
                refuse_input(path, "the output", follow=False)
            for tmp, path in temps:
                publish(tmp, path)
        except BaseException:
            for tmp, _ in temps:
                tmp.unlink(missing_ok=True)
            raise
        return self.paths
