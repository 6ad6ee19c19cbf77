"""`s2trt doctor`, the self-check for the target: exit 3 where there is no TensorRT or GPU (for real,
here), and on a stand-in target its table and exit code follow what the checks find.

The stand-in keeps everything but TensorRT and CUDA real: the demo graphs are exported by s2export,
ONNX Runtime is the reference, and each "engine" is ONNX Runtime on the graph that engine would be
built from (its portable twin), so agreement, replay and timing run on real outputs; the faults a
real target can have (a layer in the wrong precision, a CUDA graph replaying stale buffers, an
engine that finds other boxes, a failed build) are put in one at a time.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEngine, open_fake
from paths import REPO

from s2trt.errors import S2Error
from s2trt.runtime import doctor
from s2trt.runtime.backends.ort import OrtBackend


def test_console_script_is_the_doctor() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["s2trt"] == "s2trt.runtime.doctor:main"


def test_without_tensorrt_it_says_so_and_exits_3() -> None:
    """The real probe, in a child whose `import tensorrt` fails as where it is not installed."""
    code = ("import sys; sys.modules['tensorrt'] = None; from s2trt.runtime.doctor import main; "
            "sys.exit(main(['doctor']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    line, = r.stderr.strip().splitlines()
    assert line.startswith("s2trt doctor: error: nothing to check on this machine: no TensorRT (")
    assert "python3-libnvinfer" in line  # what to install, as s2export says it


def test_without_a_gpu_it_says_which(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr("s2trt.trt.versions.import_tensorrt", lambda purpose: object())
    monkeypatch.setattr("s2trt.trt.gpu.gpu_info", lambda device=0: (None, None))
    monkeypatch.setattr(doctor, "_cudart", lambda: object())
    assert doctor.main(["doctor", "--device", "1"]) == 3
    err = capsys.readouterr().err
    assert "no NVIDIA GPU 1" in err and "TensorRT" not in err
    monkeypatch.setattr(doctor, "_cudart", lambda: None)
    assert doctor.main(["doctor"]) == 3
    assert "pip install 's2trt[gpu]'" in capsys.readouterr().err


def test_agreement_counts_shared_detections_and_their_move() -> None:
    """Against hand-made outputs: (B, N, 5 + nc) boxes as cx, cy, w, h, objectness, class scores."""
    ref = np.zeros((1, 3, 7), np.float32)
    ref[0, :, :4] = [[50, 50, 20, 20], [150, 150, 40, 40], [250, 80, 30, 30]]
    ref[0, :, 4] = 0.9
    ref[0, :, 5:] = [[1, 0], [0, 1], [1, 0]]
    assert doctor.agreement(ref, ref) == (1.0, 0.0, 3)
    moved = ref.copy()
    moved[0, 1, 0] += 3  # x1 and x2 of the second box move 3 px
    assert doctor.agreement(moved, ref) == (1.0, pytest.approx(3.0), 3)
    other = ref.copy()
    other[0, 2, 5:] = [0, 1]  # the third box found as another class
    share, _, n = doctor.agreement(other, ref)
    assert (share, n) == (pytest.approx(2 / 3), 3)
    lost = ref.copy()
    lost[0, 0, 4] = 0.1  # below the 0.25 confidence
    assert doctor.agreement(lost, ref)[0] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo graphs as `s2trt doctor --export-only` writes them (s2export, in child processes)."""
    out = tmp_path_factory.mktemp("graphs")
    assert doctor.main(["doctor", "--export-only", str(out), "-q"]) == 0
    return out


class Engine(OrtBackend):
    """An "engine": ONNX Runtime on the portable twin of the graph it was built from."""

    graph_state: str

    def __init__(self, path: Path, cuda_graphs: bool, stale_replay: bool = False):
        # ONNX Runtime's CPU fusions take no FP16 scales (QLinearConcat), so INT8+FP16 runs as INT8.
        twin = Path(path.read_text())
        name = twin.name.replace(".trt.onnx", ".onnx").replace("-int8-fp16.onnx", "-int8.onnx")
        super().__init__(twin.with_name(name), device="cpu")
        self.graph_state = "on" if cuda_graphs else "off (not requested)"
        self.stale = stale_replay and cuda_graphs
        self.seen: dict[int, dict[str, np.ndarray]] = {}

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self.stale and len(batch) in self.seen:  # a graph replaying the buffers of its capture
            return self.seen[len(batch)]
        out = super().infer(batch)
        self.seen[len(batch)] = out
        return out


class StandIn(doctor.Target):
    def __init__(self, faults: frozenset[str] = frozenset()):
        super().__init__(trt=None, device=0, plugin_lib=None)
        self.faults, self.built = faults, []

    def versions(self) -> dict[str, str]:
        return {"GPU": "Stand-in (sm_87)", "TensorRT": "10.3.0", "cuda-python": "12.9.0"}

    def plugin(self) -> Path:
        return Path("libs2trt_plugins.so")

    def build(self, onnx: Path, engine: Path, precision: str) -> None:
        if f"build {precision}" in self.faults:
            raise S2Error(f"TensorRT 10.3.0 could not build an engine from {onnx.name}")
        self.built.append((onnx.name, engine.name, precision))
        engine.write_text(str(onnx))

    def precision_problems(self, engine: Path, onnx: Path, precision: str) -> list[str]:
        wrong = f"islands {precision}" in self.faults
        return ["/model.24/Softmax (FP32 island) runs in FP16"] if wrong else []

    def engine(self, path: Path, cuda_graphs: bool) -> Engine:
        eng = Engine(path, cuda_graphs, stale_replay="stale" in self.faults)
        if "shifted" in self.faults and "fp16" in path.name:
            run = eng.infer

            def shifted(batch: np.ndarray) -> dict[str, np.ndarray]:
                out = dict(run(batch))
                out["output0"] = out["output0"].copy()
                out["output0"][..., 0] += 5.0  # every box 5 px to the right
                return out

            eng.infer = shifted  # type: ignore[method-assign]
        return eng


def run(graphs: Path, capsys: pytest.CaptureFixture,
        faults: frozenset[str] = frozenset()) -> tuple[int, str, StandIn]:
    target = StandIn(faults)
    args = doctor.build_parser().parse_args(["doctor", "--onnx", str(graphs)])
    rc = doctor.doctor(args, target)
    return rc, capsys.readouterr().out, target


@pytest.mark.slow
def test_a_sound_target_passes_every_check(graphs: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "TIMED", 3)
    rc, out, target = run(graphs, capsys)
    assert rc == 0, out
    assert target.built == [("demo.trt.onnx", "demo-fp32.engine", "fp32"),
                            ("demo-fp16.trt.onnx", "demo-fp16.engine", "fp16"),
                            ("demo-int8-fp16.onnx", "demo-int8.engine", "int8")]
    lines = out.splitlines()
    assert lines[:4] == ["s2trt doctor", "  GPU: Stand-in (sm_87)", "  TensorRT: 10.3.0",
                         "  cuda-python: 12.9.0"]
    checks = [line for line in lines if line.startswith("  ok ")]
    assert len(checks) == 1 + 3 * 4 + 2 and not any("FAIL" in line for line in lines)
    # The demo images hold shapes every graph finds: agreement is over real detections.
    same = [line for line in checks if "same detections as ONNX Runtime" in line]
    assert len(same) == 3 and all(" of 0 found" not in line for line in same)
    assert any("batches 2,3,2,3,2,3: bit for bit, CUDA graphs on" in line for line in checks)
    assert any("fp16: batch 8 speed" in line and "images/s" in line for line in checks)
    assert lines[-1] == f"{len(checks)} of {len(checks)} checks passed"


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "failed"), [
    ("stale", ["fp32: CUDA graphs = --no-cuda-graphs", "fp16: CUDA graphs = --no-cuda-graphs",
               "int8: CUDA graphs = --no-cuda-graphs"]),
    ("islands fp16", ["fp16: layers run in the precision planned"]),
    ("shifted", ["fp16: same detections as ONNX Runtime"]),
    ("build int8", ["int8: engine builds"]),
])
def test_a_fault_fails_its_check_and_the_run(graphs: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch, fault: str,
                                             failed: list[str]) -> None:
    monkeypatch.setattr(doctor, "TIMED", 3)
    rc, out, _ = run(graphs, capsys, frozenset({fault}))
    assert rc == 1, out
    bad = [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("  FAIL")]
    assert [b.split("  ")[0].strip() for b in bad] == failed, out
    assert out.splitlines()[-1].endswith(f", {len(failed)} FAILED")
    if fault == "islands fp16":
        assert "/model.24/Softmax (FP32 island) runs in FP16" in bad[0]
    if fault == "shifted":
        assert "boxes within 5.00 px (limit 2)" in bad[0]


@pytest.mark.parametrize(("capturable", "ok"), [(True, True), (False, False)])
def test_graph_replay_check_on_the_tensorrt_backend(tmp_path: Path, capturable: bool, ok: bool) -> None:
    """The real TensorRT backend over the shared fakes (tests/support/fakes.py): replayed CUDA graphs give the
    plain enqueue's bits; an engine whose enqueue cannot be captured leaves graphs off, which fails."""
    for name in ("graphs", "plain"):
        (tmp_path / name).mkdir()
    fast, _ = open_fake(tmp_path / "graphs", FakeEngine(capturable=capturable))
    plain, _ = open_fake(tmp_path / "plain", FakeEngine(), backend_kw={"cuda_graphs": False})
    with fast, plain:
        row = doctor.check_graph_replay(fast, plain, "fp16")
    assert row.ok is ok, row
    assert (row.detail == "batches 2,3,2,3,2,3: bit for bit, CUDA graphs on") is ok, row


def test_target_builds_the_profile_the_checks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch 1 to 8 at the demo size: what the replay (2, 3) and the timing (1, 8) run."""
    import s2trt.export.engine as engine

    seen = []
    monkeypatch.setattr(engine, "build_engine", lambda onnx, out, opts: seen.append((onnx, out, opts)))
    doctor.Target(trt=None, device=1, plugin_lib=Path("lib.so")).build(tmp_path / "a.onnx",
                                                                       tmp_path / "a.engine", "fp16")
    (onnx, out, opts), = seen
    assert (onnx.name, out.name, opts.precision, opts.device, opts.plugin_lib) == (
        "a.onnx", "a.engine", "fp16", 1, Path("lib.so"))
    size = (doctor.IMGSZ, doctor.IMGSZ)
    assert (opts.min_shape, opts.opt_shape, opts.max_shape) == ((1, 3, *size), (8, 3, *size), (8, 3, *size))


def test_versions_head_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU, driver, CUDA runtime, TensorRT and cuda-python, as the target reports them."""
    from types import SimpleNamespace

    cudart = SimpleNamespace(cudaDriverGetVersion=lambda: (0, 12060),
                             cudaRuntimeGetVersion=lambda: (0, 12090))
    monkeypatch.setattr(doctor, "_cudart", lambda: cudart)
    monkeypatch.setattr("s2trt.trt.gpu.gpu_info", lambda device=0: ("Orin", "8.7"))
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)  # no nvidia-smi, as on some Jetsons
    rows = doctor.Target(SimpleNamespace(__version__="10.3.0"), 0, None).versions()
    assert list(rows)[:4] == ["GPU", "TensorRT", "driver", "CUDA runtime"]
    assert rows["GPU"] == "Orin (sm_87)" and rows["TensorRT"] == "10.3.0"
    assert rows["driver"] == "driver (CUDA 12.6)" and rows["CUDA runtime"] == "12.9"
    assert {"cuda-python", "cuda-bindings"} & set(rows)  # whichever this environment installed


def test_missing_graphs_name_the_command_that_makes_them(tmp_path: Path) -> None:
    (tmp_path / "demo.onnx").write_bytes(b"")
    with pytest.raises(S2Error, match=r"lacks demo\.trt\.onnx, demo-fp16\.trt\.onnx, demo-int8-fp16\.onnx: "
                                      r"make them with `s2trt doctor --export-only "):
        doctor.graphs_in(tmp_path)
