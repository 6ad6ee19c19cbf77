"""Per-stage latency bookkeeping and the end-of-run summary."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

import numpy as np

STAGES = ("decode", "preprocess", "infer", "postprocess", "write")
RESERVOIR = 20000  # samples kept per stage for percentiles: memory stays flat on endless streams


@dataclass
class StageTimes:
    count: int = 0
    total_ms: float = 0.0
    sample: list[float] = field(default_factory=list)

    def add(self, ms: float, rng: random.Random) -> None:
        self.count += 1
        self.total_ms += ms
        if len(self.sample) < RESERVOIR:
            self.sample.append(ms)
        else:  # reservoir sampling: every frame has the same chance to be in the sample
            j = rng.randrange(self.count)
            if j < RESERVOIR:
                self.sample[j] = ms


@dataclass
class Stats:
    """Milliseconds per frame for each stage (a batch's time is shared by its frames)."""

    ms: dict[str, StageTimes] = field(default_factory=lambda: {s: StageTimes() for s in STAGES})
    frames: int = 0
    detections: int = 0  # after NMS and filters: what the outputs hold
    wall_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    def add(self, stage: str, seconds: float, n: int = 1) -> None:
        with self._lock:
            for _ in range(n):
                self.ms[stage].add(seconds * 1000 / n, self._rng)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def table(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, t in self.ms.items():
            if t.count:
                a = np.asarray(t.sample)
                out[stage] = {"mean": t.total_ms / t.count, "p50": float(np.percentile(a, 50)),
                              "p95": float(np.percentile(a, 95))}
        return out

    def summary(self) -> str:
        lines = [f"{self.frames} frames, {self.detections} detections in {self.wall_s:.2f} s: "
                 f"{self.fps:.1f} FPS end to end",
                 f"{'stage':<12}{'mean ms':>9}{'p50 ms':>9}{'p95 ms':>9}"]
        for stage, t in self.table().items():
            lines.append(f"{stage:<12}{t['mean']:>9.2f}{t['p50']:>9.2f}{t['p95']:>9.2f}")
        return "\n".join(lines)
