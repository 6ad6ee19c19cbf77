"""deploy/k8s/: valid against the Kubernetes schemas (offline, the schemas bundled in the PyPI package
kubernetes-validate), consistent with what `s2serve export` writes and `s2serve` runs, and its
tritonserver arguments accepted by a real tritonserver, which then behaves as s2serve's does."""

from __future__ import annotations

import copy
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import serve_fixtures as F

from s2trt.serve import cli
from s2trt.serve import repository as R
from s2trt.serve import server as S

K8S = Path(__file__).parents[1] / "deploy" / "k8s"
# The oldest Kubernetes still in wide use with autoscaling/v2 and appProtocol, and the newest bundled.
VERSIONS = ("1.27.0", "latest")


def documents() -> list[tuple[str, dict]]:
    return [(f"{p.name}:{d['kind']}:{d['metadata']['name']}", d) for p in sorted(K8S.glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]


def one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in documents()
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def container() -> dict:
    return one("Deployment")["spec"]["template"]["spec"]["containers"][0]


def args() -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in container()["args"])


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*a, **k):
        raise AssertionError("the schema validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name, doc", documents(), ids=[n for n, _ in documents()])
def test_manifest_is_valid_kubernetes(name, doc, version, offline):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    kv.validate(doc, kv.latest_version() if version == "latest" else version, strict=True)


def test_the_validator_is_not_a_rubber_stamp(offline):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    bad = copy.deepcopy(one("Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["contianerPort"] = 8000  # a typo
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, "1.27.0", strict=True)
    bad = copy.deepcopy(one("HorizontalPodAutoscaler"))
    bad["spec"]["minReplicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, "1.27.0", strict=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = F.export_demo_model(tmp_path_factory.mktemp("model") / "demo.onnx")
    repo = tmp_path_factory.mktemp("models")
    assert cli.main(["export", str(model), str(repo), "-q"]) == 0
    return repo


def test_model_name_and_repository_match_s2serve_export(exported):
    a = args()
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert a["model-repository"] == mounts["model-repository"]
    served = sorted(p.parent.name for p in exported.glob("*/config.pbtxt"))
    assert served == [R.DETECTOR]
    assert f'name: "{R.DETECTOR}"' in (exported / R.DETECTOR / "config.pbtxt").read_text()
    hpa_model = one("HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["selector"]
    assert hpa_model["matchLabels"]["model"] == R.DETECTOR
    rules = yaml.safe_load(one("ConfigMap")["data"]["rules.yaml"])["rules"][0]
    assert f'model="{R.DETECTOR}"' in rules["seriesQuery"]


def test_ports_match_s2serve_and_the_services():
    defaults = cli._serve_parser().parse_args(["repo"])
    want = {"http": defaults.http_port, "grpc": defaults.grpc_port, "metrics": defaults.metrics_port}
    a = args()
    assert {k: int(a[f"{k}-port"]) for k in want} == want
    assert {p["name"]: p["containerPort"] for p in container()["ports"]} == want
    for svc in ("s2trt-triton", "s2trt-triton-pods"):
        for port in one("Service", svc)["spec"]["ports"]:
            assert port["targetPort"] in want and port["port"] == want[port["targetPort"]]
    pod = one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(pod["prometheus.io/port"]) == want["metrics"]


def test_probes_ask_tritons_health_endpoints():
    c = container()
    assert c["readinessProbe"]["httpGet"] == {"path": S.READY_PATH, "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": S.LIVE_PATH, "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == S.READY_PATH


def test_restricted_protocols_and_gpu_as_s2serve():
    c = container()
    key = f"$({S.ENV_ADMIN_KEY})"  # Kubernetes expands $(VAR) in args from the container's env
    s2serve = {x.split("=", 1)[0][2:]: x.split("=", 1)[1]
               for x in S.TritonServer.command(_Stub(key), None) if "restricted" in x}  # type: ignore[arg-type]
    assert s2serve and {k: args()[k] for k in s2serve} == s2serve
    env = {e["name"]: e for e in c["env"]}
    ref = env[S.ENV_ADMIN_KEY]["valueFrom"]["secretKeyRef"]
    assert ref.get("optional", False) is False  # an unset key would leave "$(S2TRT_ADMIN_KEY)" as the key
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    hpa = one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == one("Deployment")["metadata"]["name"]
    assert hpa["minReplicas"] >= 2


class _Stub:
    """The attributes TritonServer.command reads, without a repository or a binary."""

    def __init__(self, key: str):
        self.admin_key, self.shm_prefix, self.bind_host, self.verbose, self.extra_args = key, "p_", "h", 0, []
        self.repository = Path("/models")
        self.install = S.TritonInstall(Path("tritonserver"))
        self.endpoints = S.Endpoints("h", 8000, 8001, 8002)


def test_autoscaling_series_exist_in_tritons_metrics():
    rules = yaml.safe_load(one("ConfigMap")["data"]["rules.yaml"])["rules"][0]
    hpa_metric = one("HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert rules["name"]["as"] == hpa_metric
    for series in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
        assert series in rules["metricsQuery"] and series in S.METRICS  # S.METRICS: checked on a real server


@pytest.mark.skipif(not F.have_tritonserver(), reason=F.NO_SERVER)
def test_the_deployments_arguments_run_on_a_real_tritonserver(exported):
    """The container's args as they are (Triton 2.51 accepts their syntax), with the repository, the
    key and free ports of this test: probes answer, the restricted APIs need the key, metrics flow."""
    key = "k8s-test-key"
    srv = S.TritonServer(exported)
    e = srv.endpoints
    ports = {"http-port": e.http, "grpc-port": e.grpc, "metrics-port": e.metrics,
             "model-repository": exported}
    run = []
    for a in container()["args"]:
        name = a[2:].split("=", 1)[0]
        a = a.replace(f"$({S.ENV_ADMIN_KEY})", key)
        run.append(f"--{name}={ports[name]}" if name in ports else a)
    # Only this test's own additions: loopback, and the bundled Python backend's folder.
    srv.command = lambda backend_dir: [str(srv.install.binary), *run, "--http-address=127.0.0.1",
                                       "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                                       *([f"--backend-directory={backend_dir}"] if backend_dir else [])]
    with srv:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert F.http_status(e.http_url + container()[probe]["httpGet"]["path"]) == 200
        assert F.http_status(e.http_url + "/v2/logging") == 403
        assert F.http_status(e.http_url + "/v2/logging", key=key) == 200
        from s2trt.serve.client import TritonClient

        with TritonClient(e.grpc_url) as client:
            client.detect(F.sample_images(2))
        text = urllib.request.urlopen(e.metrics_url, timeout=10).read().decode()
        assert f'nv_inference_queue_duration_us{{model="{R.DETECTOR}"' in text
