"""charts/corvid rendered by Helm's own engine (helm-python-sdk, pinned, installed into a
cache outside the repo; a failed install fails the test) with the default values,
with values-gpu-canary-tls.yaml and with a downloaded model plus the trial etcd, then
checked offline:

- every object against the Kubernetes JSON schemas of kubernetes-validate (strict: an
  unknown field is an error), at the chart's oldest supported version and the newest,
  the HPA, PodDisruptionBudgets and NetworkPolicies of the autoscaling renders (KEDA and
  HPA modes) included; the KEDA ScaledObject against KEDA v2.20.2's CRD schema
  (tests/data/keda, made strict); the prometheus-operator objects structurally (their
  CRD schemas are not shipped);
- autoscaling: KEDA triggers and HPA metrics read the chart's recording rules (and the
  prometheus-adapter rules of values.yaml), scale-down lets a pod drain before the next
  goes; PDBs, topology spread and NetworkPolicy peers select the chart's own pods;
- yamllint on the rendered manifests and the values files; `helm lint --strict`;
- invariants: probe ports are container ports, the gRPC probes ask for health service
  names that a real corvid-server answers SERVING, the control plane's HTTP probes
  are /healthz and /readyz on its metrics port, server.json passes
  `corvid-server --check-config` (device cuda: by a CUDA=1 build when there is one,
  else with device cpu, the rest the same, and the refusal of cuda checked) and
  controlplane.json `corvid-controlplane --check-config` (with TLS and token settings
  that match the pod's mounts), grace period > preStop + drain timeout,
  non-root and read-only root everywhere, GPUs and tp only in GPU mode;
- the control plane's credentials (CA, admin token) are files in whole-volume Secret
  mounts, never subPath nor env; a real corvid-controlplane on the rendered config,
  with the pod's Secret volumes laid out as the kubelet does, takes a rotated token and
  CA without a restart and refuses a bad CA (keeping the last good set);
- values.schema.json and the template checks reject each file of tests/helm/bad-values;
- every corvid_* metric a dashboard panel or alert rule uses is exported by a real
  corvid-server (stories260K) or a real corvid-controlplane (leading a rollout on a
  real etcd), both scraped on 127.0.0.1, except the GPU gauges (written only where
  NVML finds GPUs: checked in server/service/metrics.c instead);
- files/fetch-model.sh against a local HTTP server (good digest, bad digest, kept file);
- the Dockerfile (BuildKit's parser): both variants, .ci/run's build commands, the
  chart's user and ports.
"""
import glob
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helm"))
import chartlib  # noqa: E402
from corvid_testlib import BIN, DATA, TMP, Checks, Server, free_port, proto_modules  # noqa: E402
from cp_testlib import ControlPlane, cli  # noqa: E402
from etcd_testlib import Etcd  # noqa: E402

# Metrics the dashboard and alerts use that a CPU-only test machine cannot see:
# corvid-server writes the GPU gauges only where NVML finds GPUs (the test checks that
# server/service/metrics.c writes them).
GPU_ONLY = {"corvid_gpu_utilization_ratio", "corvid_gpu_memory_used_bytes", "corvid_gpu_memory_total_bytes"}
KUBE_VERSIONS = ["1.27.0", None]  # the chart's kubeVersion floor, and the newest schemas
GPU_VALUES = os.path.join(chartlib.CHART, "values-gpu-canary-tls.yaml")
THREE_ALERTS = ("CorvidGPUUtilizationHigh", "CorvidP99LatencyHigh", "CorvidErrorRateHigh")
CP_ALERTS = ("CorvidControlPlaneNoLeader", "CorvidControlPlaneEtcdUnreachable", "CorvidRolloutRolledBack")
KEDA_CRD = os.path.join(DATA, "keda", "keda.sh_scaledobjects-v2.20.2.yaml")
# Autoscaling (KEDA, then the HPA alternative) with the NetworkPolicy, on top of the
# Prometheus operator objects that autoscaling needs.
FLEET_VALUES = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
                "autoscaling": {"enabled": True, "mode": "keda", "minReplicas": 2, "maxReplicas": 6},
                "networkPolicy": {"enabled": True}}
MODEL = os.path.join(DATA, "models", "stories260K.gguf")

checks = Checks()
try:
    chartlib.ensure_tools()
except Exception as e:  # the whole test depends on these: fail loudly, do not skip
    print("FAIL installing the chart tools: %s" % e)
    print("0 passed, 1 failed")
    sys.exit(1)

import helm_python  # noqa: E402
import kubernetes_validate  # noqa: E402
import kubernetes_validate.utils as kv_utils  # noqa: E402

RENDERS = {}
MODEL_SOURCES = ["https://example.invalid/", "https://mirror.example.invalid/corvid/"]
OTLP = "http://otel-collector.example.invalid:4318/v1/traces"


def render_all():
    RENDERS["default"] = chartlib.render()
    RENDERS["gpu-canary-tls"] = chartlib.render(chartlib.load_values(GPU_VALUES))
    # The objects neither file turns on: a downloaded model and the trial etcd.
    RENDERS["download-etcd"] = chartlib.render({"model": {"source": "download", "uri": "https://example.invalid/m.gguf",
                                                          "sha256": "ab" * 32}, "etcd": {"enabled": True},
                                                "server": {"config": {"modelSources": MODEL_SOURCES}},
                                                "tracing": {"otlpEndpoint": OTLP, "sampleRatio": 0.25},
                                                "responseCache": {"backend": "redis"}})
    RENDERS["fleet-keda"] = chartlib.render(FLEET_VALUES)
    RENDERS["fleet-hpa"] = chartlib.render(dict(FLEET_VALUES, autoscaling=dict(FLEET_VALUES["autoscaling"], mode="hpa")))
    for name, m in RENDERS.items():
        kinds = sorted({d["kind"] for _, d in chartlib.documents(m)})
        print("  %s: %d objects, kinds %s" % (name, len(chartlib.documents(m)), ", ".join(kinds)))


def docs(name):
    return chartlib.documents(RENDERS[name])


def kube_schemas():
    newest = kv_utils.latest_version()
    counted = 0
    for name in RENDERS:
        for path, d in docs(name):
            if d["apiVersion"].startswith(("monitoring.coreos.com/", "keda.sh/")):
                continue
            for v in KUBE_VERSIONS:
                try:
                    kubernetes_validate.validate(d, v or newest, strict=True)
                except kubernetes_validate.ValidationError as e:
                    raise AssertionError("%s %s %s (k8s %s): %s at %s" % (
                        name, d["kind"], d["metadata"]["name"], v or newest, e.message, "/".join(map(str, e.path))))
                counted += 1
    print("  %d object validations against k8s %s and %s" % (counted, KUBE_VERSIONS[0], newest))


def prometheus_operator_objects():
    """Fields the operator requires (its CRDs are not available offline)."""
    d = docs("gpu-canary-tls")
    sm = chartlib.find(d, "ServiceMonitor")
    ports = {p["name"] for _, s in d if s["kind"] == "Service" for p in s["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in ports, ep
        assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", ep["interval"]), ep
    sel = sm["spec"]["selector"]["matchLabels"]
    scraped = [s for _, s in d if s["kind"] == "Service" and sel.items() <= s["metadata"]["labels"].items()
               and any(p["name"] == "metrics" for p in s["spec"]["ports"])]
    assert {s["metadata"]["name"] for s in scraped} == {"corvid", "corvid-controlplane"}, scraped
    rule = chartlib.find(d, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    creds = "CorvidControlPlaneCredentialsRefused"
    assert set(alerts) == set(THREE_ALERTS) | set(CP_ALERTS) | {creds}, alerts
    for n in THREE_ALERTS:
        a = alerts[n]
        assert a["for"] == "5m" and a["expr"].strip() and a["labels"]["severity"] == "critical", a
    # Each control plane replica on its own: a follower with a refused set is a problem too.
    a = alerts[creds]
    assert a["for"] == "10m" and a["labels"]["severity"] == "warning", a
    assert re.fullmatch(r'min by \(namespace, pod\) \(corvid_controlplane_creds_last_reload_successful'
                        r'\{namespace="ai", service="corvid-controlplane"\}\) == 0', a["expr"].strip()), a["expr"]
    desc = a["annotations"]["description"]
    for needle in ("corvid-controlplane-token", "corvid-grpc-tls", "ca.crt", "credentials:"):
        assert needle in desc, (needle, desc)
    # Nothing to rotate without TLS or auth: no credentials alert.
    plain = chartlib.find(chartlib.documents(chartlib.render({"metrics": {"prometheusRule": {"enabled": True}}})),
                          "PrometheusRule")
    assert {r["alert"] for g in plain["spec"]["groups"] for r in g["rules"] if "alert" in r} == \
        set(THREE_ALERTS) | set(CP_ALERTS), plain
    for a in alerts.values():
        anchor = a["annotations"]["runbook_url"]
        assert re.fullmatch(r"README\.md#runbook-[a-z0-9-]+", anchor), a
    assert len({a["annotations"]["runbook_url"] for a in alerts.values()}) == len(alerts), "runbook anchors repeat"
    # The alerts compare the recorded figures the autoscaler reads too.
    records = {r["record"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    assert "histogram_quantile(0.99," in records["corvid_version:time_to_first_token_seconds:p99"]
    assert alerts["CorvidP99LatencyHigh"]["expr"].startswith("corvid_version:time_to_first_token_seconds:p99{")
    assert alerts["CorvidErrorRateHigh"]["expr"].startswith("corvid_version:requests:error_ratio{")
    assert re.search(r"> 0\.8\s*$", alerts["CorvidGPUUtilizationHigh"]["expr"])
    assert re.search(r"> 0\.5\s*$", alerts["CorvidP99LatencyHigh"]["expr"])
    assert re.search(r"> 0\.05\s*$", alerts["CorvidErrorRateHigh"]["expr"])
    assert not [x for _, x in docs("default") if x["apiVersion"].startswith("monitoring.coreos.com/")]


def yamllint_all():
    out = os.path.join(TMP, "rendered")
    os.makedirs(out, exist_ok=True)
    files = []
    for name, m in RENDERS.items():
        for path, text in m.items():
            if path.endswith(".yaml") and text.strip():
                f = os.path.join(out, name + "--" + path.replace("/", "_"))
                with open(f, "w") as fh:
                    fh.write(text if text.startswith("---") else "---\n" + text.lstrip("\n"))
                files.append(f)
    files += [os.path.join(chartlib.CHART, f) for f in ("Chart.yaml", "values.yaml", "values-gpu-canary-tls.yaml")]
    files += glob.glob(os.path.join(chartlib.ROOT, "tests", "helm", "bad-values", "*.yaml"))
    cfg = os.path.join(chartlib.ROOT, "tests", "helm", "yamllint.yaml")
    r = subprocess.run(["yamllint", "-f", "parsable", "-s", "-c", cfg] + files, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert r.returncode == 0, r.stdout
    print("  yamllint: %d files clean" % len(files))


# Free-form Kubernetes structures: a comment on the key documents what lies under it.
FREE_FORM = {"resources", "podSecurityContext", "containerSecurityContext", "topologySpread", "adapterRules",
             "clients", "prometheus"}


def values_commented():
    """Every key of values.yaml has a comment line right above it (inside a FREE_FORM
    structure, the structure's own comment counts)."""
    lines = open(os.path.join(chartlib.CHART, "values.yaml")).read().split("\n")
    stack, bare = [], []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_.]+):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        commented = i > 0 and lines[i - 1].strip().startswith("#")
        inside_free_form = any(k in FREE_FORM and c for _, k, c in stack)
        if not commented and not inside_free_form:
            bare.append("line %d: %s" % (i + 1, line.strip()))
        stack.append((indent, m.group(2), commented))
    assert not bare, "values.yaml keys without a comment: %s" % bare
    assert len(lines) > 200


def helm_lint():
    for name, values in (("default", None), ("gpu-canary-tls", chartlib.load_values(GPU_VALUES))):
        rep = helm_python.lint(chartlib.CHART, values, strict=True, namespace="ai")
        bad = [m for m in rep.get("messages") or [] if m["severity"] >= 2] + list(rep.get("errors") or [])
        assert not bad, (name, bad)


def probe_ports():
    for name in RENDERS:
        for obj, spec in chartlib.pod_specs(docs(name)):
            for c in spec.get("containers", []):
                ports = {p["containerPort"] for p in c.get("ports", [])}
                names = {p["name"] for p in c.get("ports", [])}
                for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                    pr = c.get(kind)
                    if not pr:
                        continue
                    for how in ("grpc", "httpGet", "tcpSocket"):
                        if how in pr:
                            port = pr[how]["port"]
                            ok = port in ports if isinstance(port, int) else port in names
                            assert ok, "%s %s/%s %s port %r not among %s" % (name, obj, c["name"], kind, port,
                                                                          sorted(ports) + sorted(names))
    server = chartlib.find(docs("default"), "Deployment", "-server")["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["grpc"] == {"port": 50051, "service": "corvid.v1.Inference"}
    assert server["startupProbe"]["grpc"]["service"] == "corvid.v1.Inference"
    assert server["livenessProbe"]["grpc"] == {"port": 50051, "service": ""}
    tls = chartlib.find(docs("gpu-canary-tls"), "Deployment", "-server")["spec"]["template"]["spec"]["containers"][0]
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert tls[kind]["grpc"]["port"] == 50052, (kind, tls[kind])
    for name in RENDERS:
        cp = chartlib.find(docs(name), "Deployment", "-controlplane")["spec"]["template"]["spec"]["containers"][0]
        assert cp["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}, cp["livenessProbe"]
        assert cp["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, cp["readinessProbe"]
        cfg = json.loads(chartlib.find(docs(name), "ConfigMap", "-controlplane")["data"]["controlplane.json"])
        assert cfg["metrics_listen"] == "0.0.0.0:%d" % cp["ports"][0]["containerPort"], (cfg, cp["ports"])
    # The startup probe gives a model this long to load (period x threshold).
    sp = tls["startupProbe"]
    assert sp["periodSeconds"] * sp["failureThreshold"] >= 600, sp


def config_maps(name):
    return chartlib.find(docs(name), "ConfigMap", "-server")["data"]


# The files server.json names are the pod's mounts, absent here, and --check-config
# refuses a file it cannot read: each is replaced by a stand-in (where the pod mounts
# them is checked by server_keys).
POD_FILES = ("model", "auth_config", "tls_cert", "tls_key", "tls_client_ca")


def check_server_config(exe, cfg, name):
    cfg = dict(cfg)
    for key in POD_FILES:
        if cfg.get(key):
            cfg[key] = os.path.join(TMP, "%s-%s" % (name, key))
            open(cfg[key], "w").close()
    path = os.path.join(TMP, name + "-server.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    r = subprocess.run([exe, "--check-config", "--config", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=30)
    return r.returncode, r.stdout


def server_config_accepted():
    exe = os.path.join(BIN, "corvid-server")
    cuda_exe = os.path.join(chartlib.ROOT, "build", "cuda", "bin", "corvid-server")  # .ci/run's CUDA=1 build
    for name in RENDERS:
        cfg = json.loads(config_maps(name)["server.json"])
        rc, out = check_server_config(exe, cfg, name)
        if cfg.get("device") == "cuda" and rc != 0:
            # A build without CUDA must say exactly that, and take the rest with device cpu.
            assert "built without CUDA (make CUDA=1)" in out, (name, out)
            if os.path.isfile(cuda_exe):
                rc, out = check_server_config(cuda_exe, cfg, name + "-cuda")
                print("  %s server.json checked by %s" % (name, cuda_exe))
            else:
                rc, out = check_server_config(exe, dict(cfg, device="cpu"), name + "-as-cpu")
                print("  %s server.json: device cuda refused by this CPU-only build (no %s); the rest "
                      "checked with device cpu" % (name, cuda_exe))
        assert rc == 0, "%s server.json refused: %s" % (name, out)
        cmd = chartlib.find(docs(name), "Deployment", "-server")["spec"]["template"]["spec"]["containers"][0]["command"]
        assert cmd == ["corvid-server", "--config", "/etc/corvid/server.json"], cmd
    # A key the server does not know must still be refused, or the check above proves nothing.
    rc, out = check_server_config(exe, dict(json.loads(config_maps("default")["server.json"]), no_such_key=1), "bad")
    assert rc != 0 and "no_such_key" in out, out


def server_keys():
    """TLS, the health port, the access policy (auth.json beside it), CUDA and tensor
    parallelism all reach the server through server.json: nothing is left pending."""
    for name in RENDERS:
        want = {"server.json", "fetch-model.sh"} | ({"auth.json"} if name == "gpu-canary-tls" else set())
        assert set(config_maps(name)) == want, (name, sorted(config_maps(name)))
        assert "NOT in effect" not in RENDERS[name]["corvid/templates/NOTES.txt"]
    default = json.loads(config_maps("default")["server.json"])
    assert "device" not in default and "tp" not in default, default  # the server's defaults: cpu, tp 1
    # Admin loads open files under /models only (where the init container puts the model);
    # remote URIs need model_sources, and then a writable cache.
    assert default["model_dirs"] == "/models" and "model_sources" not in default, default
    assert "model_cache_dir" not in default, default
    dl = json.loads(config_maps("download-etcd")["server.json"])
    assert dl["model_sources"] == ",".join(MODEL_SOURCES) and dl["model_cache_dir"] == "/tmp/model-cache", dl
    cms = config_maps("gpu-canary-tls")
    base = json.loads(cms["server.json"])
    assert base["device"] == "cuda" and base["tp"] == 2, base
    assert base["tls_cert"] == "/etc/corvid/tls/tls.crt" and base["tls_key"] == "/etc/corvid/tls/tls.key", base
    assert base["health_listen"].endswith(":50052") and base["auth_config"] == "/etc/corvid/auth.json", base
    auth = json.loads(cms["auth.json"])
    assert set(auth) == {"jwt", "allowlist", "rate_limit", "audit_log"}, auth
    assert auth["rate_limit"] == {"per_second": 20, "burst": 40} and auth["audit_log"] == "-", auth
    assert auth["jwt"]["keys"] == [{"alg": "ES256", "kid": "corvid-2026", "public_key_file": "/etc/corvid/jwt/public.pem"}]
    mounts = chartlib.find(docs("gpu-canary-tls"), "Deployment", "-server")["spec"]["template"]["spec"]["containers"][0]
    assert any(m["mountPath"] == "/etc/corvid/auth.json" for m in mounts["volumeMounts"]), mounts["volumeMounts"]
    notes = RENDERS["gpu-canary-tls"]["corvid/templates/NOTES.txt"]
    # The control plane presents the CA and the admin token now: no warning about it.
    assert "does not yet present" not in notes and "(TLS), with the admin token" in notes, notes


def controlplane_config():
    """controlplane.json through `corvid-controlplane --check-config` (which reads none
    of the files it names: credential_mounts checks those paths against the pod)."""
    exe = os.path.join(BIN, "corvid-controlplane")
    cmd = chartlib.find(docs("default"), "Deployment", "-controlplane")["spec"]["template"]["spec"]["containers"][0]
    assert cmd["command"] == ["corvid-controlplane", "run", "--config", "/etc/corvid/controlplane.json"], cmd

    def check(path):
        r = subprocess.run([exe, "--check-config", "--config", path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        return r.returncode, r.stdout
    for name in RENDERS:
        text = chartlib.find(docs(name), "ConfigMap", "-controlplane")["data"]["controlplane.json"]
        path = os.path.join(TMP, name + "-controlplane.json")
        with open(path, "w") as f:
            f.write(text)
        rc, out = check(path)
        assert rc == 0 and out.strip() == "config ok", (name, out)
    _, _, cfg = controlplane_pod(docs("gpu-canary-tls"))
    assert cfg["server_tls"] == {"ca": "/etc/corvid/tls/ca.crt", "server_name": "corvid.ai.svc"}, cfg
    assert cfg["server_token_file"] == "/etc/corvid/admin-token/token", cfg
    plain = json.loads(chartlib.find(docs("default"), "ConfigMap", "-controlplane")["data"]["controlplane.json"])
    assert not {"server_tls", "server_token_file", "server_token_env"} & set(plain), plain
    # The check refuses what run would refuse, or passing it proves nothing.
    for bad_key, needle in ((dict(no_such_key=1), "no_such_key"), (dict(metrics_listen="0.0.0.0"), "metrics_listen"),
                            (dict(server_tls={"server_name": "x"}), "needs \"ca\"")):
        bad = os.path.join(TMP, "bad-controlplane.json")
        with open(bad, "w") as f:
            json.dump(dict(cfg, **bad_key), f)
        rc, out = check(bad)
        assert rc != 0 and needle in out, (bad_key, out)


def prestop_sleep(container):
    """The seconds the server's preStop sleeps, after it has turned readiness off
    (SIGUSR1 to the server, PID 1 of its container: test_server_metrics checks that a
    real server stops being ready on it and still serves)."""
    cmd = container["lifecycle"]["preStop"]["exec"]["command"]
    m = re.fullmatch(r"kill -USR1 1; sleep ([0-9]+)", cmd[2]) if cmd[:2] == ["/bin/sh", "-c"] else None
    assert m and container["command"][0] == "corvid-server", cmd
    return int(m.group(1))


def drain_within_grace():
    for name in RENDERS:
        spec = chartlib.find(docs(name), "Deployment", "-server")["spec"]["template"]["spec"]
        drain = json.loads(config_maps(name)["server.json"])["drain_timeout_s"]
        sleep = prestop_sleep(spec["containers"][0])
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > sleep + drain, (name, grace, sleep, drain)


def security_contexts():
    for name in RENDERS:
        for obj, spec in chartlib.pod_specs(docs(name)):
            psc = spec["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, (name, obj, psc)
            assert spec.get("automountServiceAccountToken") is False, (name, obj)
            for c in spec.get("initContainers", []) + spec["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, (obj, c)
                assert "ALL" in sc["capabilities"]["drop"], (obj, c)
                assert c.get("resources", {}).get("limits", {}).get("memory"), (name, obj, c["name"])


def gpu_and_cpu_modes():
    cpu = chartlib.find(docs("default"), "Deployment", "-server")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in json.dumps(cpu), "GPU resources in CPU-only mode"
    assert cpu["containers"][0]["image"].endswith("-cpu"), cpu["containers"][0]["image"]
    gpu = chartlib.find(docs("gpu-canary-tls"), "Deployment", "-server")["spec"]["template"]["spec"]
    c = gpu["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2, c["resources"]
    assert not c["image"].endswith("-cpu")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    cp = chartlib.find(docs("gpu-canary-tls"), "Deployment", "-controlplane")
    assert cp["spec"]["replicas"] == 2
    cfg = json.loads(chartlib.find(docs("gpu-canary-tls"), "ConfigMap", "-controlplane")["data"]["controlplane.json"])
    assert cfg["defaults"]["strategy"] == "canary" and cfg["defaults"]["steps"] == [1, 5, 25, 50, 100], cfg
    assert cfg["defaults"]["max_p99_ttft_ms"] == 500 and cfg["defaults"]["window_ms"] == 600000, cfg
    assert cfg["dns"] == {"name": "corvid-servers.ai.svc.cluster.local", "port": 50051, "refresh_ms": 10000}, cfg
    headless = chartlib.find(docs("gpu-canary-tls"), "Service", "-servers")
    assert headless["spec"]["clusterIP"] == "None"
    assert len(cfg["etcd"].split(",")) == 3, cfg


def balancing_service():
    """A headless Service over the ready server pods for client-side round-robin, and the
    connection age that makes such clients re-resolve, in server.json."""
    svc = chartlib.find(docs("default"), "Service", "-grpc")
    assert svc["spec"]["clusterIP"] == "None", svc
    assert not svc["spec"].get("publishNotReadyAddresses"), "clients must see only ready pods: %s" % svc
    assert [p["port"] for p in svc["spec"]["ports"]] == [50051], svc
    cfg = json.loads(config_maps("default")["server.json"])
    assert cfg["max_connection_age_s"] == 300 and cfg["max_connection_age_grace_s"] == 600, cfg
    off = chartlib.render({"server": {"headlessService": {"enabled": False}}})
    assert not [d for _, d in chartlib.documents(off)
                if d["kind"] == "Service" and d["metadata"]["name"].endswith("-grpc")]


def tracing_config():
    """tracing.* reaches server.json and controlplane.json (both pass --check-config in
    the checks above, this render included); nothing of it without an endpoint."""
    srv = json.loads(config_maps("download-etcd")["server.json"])
    assert srv["otlp_endpoint"] == OTLP and srv["trace_sample_ratio"] == 0.25, srv
    cp = json.loads(chartlib.find(docs("download-etcd"), "ConfigMap", "-controlplane")["data"]["controlplane.json"])
    assert cp["otlp_endpoint"] == OTLP, cp
    plain = json.loads(config_maps("default")["server.json"])
    assert not {"otlp_endpoint", "trace_sample_ratio"} & set(plain), plain


def model_storage():
    init = chartlib.find(docs("gpu-canary-tls"), "Deployment", "-server")["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e["value"] for e in init["env"]}
    v = chartlib.load_values(GPU_VALUES)["model"]
    assert env["MODEL_URI"] == v["uri"] and env["MODEL_SHA256"] == v["sha256"], env
    assert env["MODEL_PATH"] == json.loads(config_maps("gpu-canary-tls")["server.json"])["model"]
    spec = chartlib.find(docs("download-etcd"), "Deployment", "-server")["spec"]["template"]["spec"]
    vol = [x for x in spec["volumes"] if x["name"] == "models"][0]
    assert "emptyDir" in vol, vol
    assert not [d for _, d in docs("download-etcd") if d["kind"] == "PersistentVolumeClaim"]
    claim = [x for x in chartlib.find(docs("default"), "Deployment", "-server")["spec"]["template"]["spec"]["volumes"]
             if x["name"] == "models"][0]["persistentVolumeClaim"]["claimName"]
    assert chartlib.find(docs("default"), "PersistentVolumeClaim")["metadata"]["name"] == claim


def trial_etcd():
    sts = chartlib.find(docs("download-etcd"), "StatefulSet", "-etcd")
    svc = chartlib.find(docs("download-etcd"), "Service", "-etcd")
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
    cfg = json.loads(chartlib.find(docs("download-etcd"), "ConfigMap", "-controlplane")["data"]["controlplane.json"])
    assert cfg["etcd"] == "http://corvid-etcd.ai.svc:2379", cfg["etcd"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--listen-client-urls=http://0.0.0.0:2379" in args, args
    assert not [d for _, d in docs("default") if d["kind"] == "StatefulSet"]


def response_cache():
    """Off by default; redis with the chart's own Redis (download-etcd) or an existing one
    (values-gpu-canary-tls.yaml), named in server.json as the server reads it."""
    default = json.loads(config_maps("default")["server.json"])
    assert not [k for k in default if k.startswith("response_cache")], default
    assert not [d for _, d in docs("default") if d["metadata"]["name"].endswith("-redis")]
    own = json.loads(config_maps("download-etcd")["server.json"])
    svc = chartlib.find(docs("download-etcd"), "Service", "-redis")
    dep = chartlib.find(docs("download-etcd"), "Deployment", "-redis")
    port = svc["spec"]["ports"][0]
    assert own["response_cache"] == "redis" and own["response_cache_redis"] == "%s:%d" % (svc["metadata"]["name"],
                                                                                         port["port"]), own
    assert own["response_cache_scope"] == "shared" and own["response_cache_ttl_s"] == 3600, own
    spec = dep["spec"]["template"]["spec"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"]
    c = spec["containers"][0]
    assert c["ports"][0]["containerPort"] == 6379 and port["targetPort"] == c["ports"][0]["name"]
    assert c["command"][c["command"].index("--maxmemory") + 1] == "512mb", c["command"]
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"], c  # the root filesystem is read-only
    ext = json.loads(config_maps("gpu-canary-tls")["server.json"])
    assert ext["response_cache_redis"] == "redis-master.cache.svc:6379" and ext["response_cache_scope"] == "subject"
    assert not [d for _, d in docs("gpu-canary-tls") if d["metadata"]["name"].endswith("-redis")]
    # With NetworkPolicies, the passwordless Redis admits the server pods only.
    d = chartlib.documents(chartlib.render({"networkPolicy": {"enabled": True}, "responseCache": {"backend": "redis"}}))
    pol = chartlib.find(d, "NetworkPolicy", "-redis")["spec"]
    assert selects(pol["podSelector"], chartlib.find(d, "Deployment", "-redis")["spec"]["template"]["metadata"]["labels"])
    [rule] = pol["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}], rule
    server = chartlib.find(d, "Deployment", "-server")["spec"]["template"]["metadata"]["labels"]
    assert [p for p in rule["from"] if selects(p["podSelector"], server)] == rule["from"], rule
    assert not selects(rule["from"][0]["podSelector"], {"app.kubernetes.io/component": "gateway"})


def self_signed(stem):
    """(certificate PEM, key PEM) of a fresh self-signed P-256 certificate for corvid.ai.svc."""
    key = os.path.join(TMP, stem + ".key")
    crt = os.path.join(TMP, stem + ".pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=corvid.ai.svc"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return open(crt).read(), open(key).read()


def controlplane_pod(d):
    """(pod spec, container, parsed controlplane.json) of a render's control plane."""
    spec = chartlib.find(d, "Deployment", "-controlplane")["spec"]["template"]["spec"]
    cfg = json.loads(chartlib.find(d, "ConfigMap", "-controlplane")["data"]["controlplane.json"])
    return spec, spec["containers"][0], cfg


def check_credential_mounts(d, tls_secret, token_secret, token_key):
    """Every credential file of controlplane.json is a key of the expected Secret in a
    whole-volume mount (the kubelet updates those, and the control plane re-reads
    them); none is a subPath mount, none comes through the environment (read once)."""
    spec, c, cfg = controlplane_pod(d)
    assert "server_token_env" not in cfg and not c.get("env") and not c.get("envFrom"), (cfg, c.get("env"))
    for x in spec.get("initContainers", []) + spec["containers"]:
        for m in x.get("volumeMounts", []):
            vol = [v for v in spec["volumes"] if v["name"] == m["name"]][0]
            assert not ("secret" in vol and m.get("subPath")), "subPath mount of a Secret: %s" % m
    want = {cfg["server_tls"]["ca"]: (tls_secret, "ca.crt"), cfg["server_token_file"]: (token_secret, token_key)}
    assert not {"cert", "key"} & set(cfg["server_tls"]), cfg  # no client certificate: the chart has none
    for path, (secret, key) in want.items():
        vol, got = chartlib.secret_key_at(spec, c, path)
        assert (vol["secret"]["secretName"], got) == (secret, key), (path, vol, got)
    # The servers' private key stays out of the control plane's pods.
    tls_vol = [v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == tls_secret][0]
    assert [i["key"] for i in tls_vol["secret"]["items"]] == ["ca.crt"], tls_vol


def credential_mounts():
    check_credential_mounts(docs("gpu-canary-tls"), "corvid-grpc-tls", "corvid-controlplane-token", "token")
    for name in ("default", "download-etcd"):  # neither TLS nor auth: nothing to mount
        spec, _, cfg = controlplane_pod(docs(name))
        assert not [v for v in spec["volumes"] if "secret" in v] and "server_tls" not in cfg, (name, spec)


class PodSecretVolumes:
    """The Secret volumes of one container laid out under `root` + mountPath as the
    kubelet's atomic writer does: each projected file is a symlink NAME -> ..data/NAME,
    ..data a symlink to a timestamped directory; an update writes a new directory, then
    renames a new ..data link over the old one and removes the old directory."""

    def __init__(self, root, spec, container, secrets):
        self.root = root
        self.mounts = {}  # Secret name -> (directory, volume)
        self.n = 0
        volumes = {v["name"]: v for v in spec["volumes"]}
        for m in container["volumeMounts"]:
            vol = volumes[m["name"]]
            if "secret" in vol:
                assert not m.get("subPath"), "%s: the kubelet never updates a subPath mount" % m["mountPath"]
                name = vol["secret"]["secretName"]
                self.mounts[name] = (root + m["mountPath"], vol)
                self.update(name, secrets[name])

    def path(self, pod_path):
        return self.root + pod_path

    def update(self, secret, data):
        d, vol = self.mounts[secret]
        items = vol["secret"].get("items") or [{"key": k, "path": k} for k in data]
        self.n += 1
        gen = "..2026_11_28_00_00_%02d.%d" % (self.n, os.getpid())
        for it in items:
            f = os.path.join(d, gen, it["path"])
            os.makedirs(os.path.dirname(f), exist_ok=True)
            with open(f, "w") as fh:
                fh.write(data[it["key"]])
            os.chmod(f, vol["secret"].get("defaultMode", 0o644))
        old = os.readlink(os.path.join(d, "..data")) if os.path.islink(os.path.join(d, "..data")) else None
        os.symlink(gen, os.path.join(d, "..data_tmp"))
        os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
        for it in items:
            top = it["path"].split("/")[0]
            if not os.path.lexists(os.path.join(d, top)):
                os.symlink(os.path.join("..data", top), os.path.join(d, top))
        if old:
            shutil.rmtree(os.path.join(d, old))


def controlplane_rotation():
    """A real corvid-controlplane on the rendered controlplane.json of values-gpu-canary-
    tls.yaml (TLS and auth), its pod's Secret volumes laid out under a temp root as the
    kubelet lays them out: a new admin token and a new CA put into the Secrets are
    loaded without a restart, a CA Secret holding no certificate is refused and counted
    (creds_last_reload_successful 0, what the alert watches) with the last good set kept."""
    spec, c, cfg = controlplane_pod(docs("gpu-canary-tls"))
    ca1, key1 = self_signed("rotation-ca1")
    ca2, _ = self_signed("rotation-ca2")
    tokens = ["corvid-admin-%s" % os.urandom(12).hex() for _ in range(2)]
    tls = {"tls.crt": ca1, "tls.key": key1, "ca.crt": ca1}
    vols = PodSecretVolumes(tempfile.mkdtemp(dir=TMP), spec, c, {"corvid-grpc-tls": tls,
                                                                 "corvid-controlplane-token": {"token": tokens[0] + "\n"}})
    assert not os.path.lexists(vols.path("/etc/corvid/tls/tls.key"))
    etcd = Etcd()
    cp = None
    try:
        run = dict(cfg, etcd=etcd.url, servers=["127.0.0.1:%d" % free_port()], poll_ms=200,
                   server_tls=dict(cfg["server_tls"], ca=vols.path(cfg["server_tls"]["ca"])),
                   server_token_file=vols.path(cfg["server_token_file"]))
        del run["dns"]  # the cluster's headless Service: one address where nothing listens instead
        cp = ControlPlane("cp-chart-rotation", run)
        creds = lambda: {n[len("corvid_controlplane_creds_"):]: v for (n, _), v in cp.metrics().items()  # noqa: E731
                         if n.startswith("corvid_controlplane_creds_")}
        assert creds()["last_reload_successful"] == 1 and creds()["reloads_total"] == 0, creds()
        vols.update("corvid-controlplane-token", {"token": tokens[1]})
        cp.wait(lambda: creds()["reloads_total"] == 1, 10, "the new admin token loaded")
        assert "credentials: reloaded (server_token_file changed)" in cp.log(), cp.log()
        vols.update("corvid-grpc-tls", dict(tls, **{"ca.crt": key1}))
        cp.wait(lambda: creds()["reload_errors_total"] == 1, 10, "a ca.crt without a certificate refused")
        assert creds()["last_reload_successful"] == 0 and creds()["reloads_total"] == 1, creds()
        assert "server_tls.ca %s: no PEM CERTIFICATE block" % vols.path("/etc/corvid/tls/ca.crt") in cp.log(), cp.log()
        vols.update("corvid-grpc-tls", dict(tls, **{"ca.crt": ca2}))
        cp.wait(lambda: creds()["reloads_total"] == 2, 10, "the new CA loaded")
        assert creds()["last_reload_successful"] == 1, creds()
        assert "reloaded (server_tls.ca changed)" in cp.log(), cp.log()
        assert not [t for t in tokens if t in cp.log()], "a token reached the log"
    finally:
        if cp:
            cp.stop()
        etcd.destroy()


def chart_made_secrets():
    """tls.cert/key and an HS256 secret in values: the chart writes the Secrets itself."""
    cert, key = self_signed("chart-made")
    hmac = os.urandom(24).hex()
    print("  HS256 secret drawn for this run: %d bytes" % len(hmac))
    m = chartlib.render({"tls": {"enabled": True, "cert": cert, "key": key},
                         "auth": {"enabled": True, "jwt": {"hmacSecret": hmac},
                                  "adminTokenSecret": {"name": "admin-token", "key": "admin.jwt"},
                                  "testTokenSecret": {"name": "test-token", "key": "token"}}})
    d = chartlib.documents(m)
    check_credential_mounts(d, "corvid-tls", "admin-token", "admin.jwt")
    for _, x in d:
        kubernetes_validate.validate(x, kv_utils.latest_version(), strict=True)
    import base64
    tls = chartlib.find(d, "Secret", "-tls")
    assert tls["type"] == "kubernetes.io/tls"
    assert base64.b64decode(tls["data"]["tls.crt"]).decode() == cert
    jwt = chartlib.find(d, "Secret", "-jwt")
    assert base64.b64decode(jwt["data"]["hmac.key"]).decode() == hmac
    test_pod = chartlib.find(d, "Pod", "-test")["spec"]["containers"][0]
    assert "--tls-ca /etc/corvid/tls/ca.crt" in test_pod["command"][2]
    assert test_pod["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "test-token"


def bad_values_rejected():
    files = sorted(glob.glob(os.path.join(chartlib.ROOT, "tests", "helm", "bad-values", "*.yaml")))
    assert len(files) >= 10, files
    for f in files:
        expect = re.search(r"^# expect: (.+)$", open(f).read(), re.M).group(1)
        try:
            chartlib.render(chartlib.load_values(f))
        except helm_python.HelmError as e:
            msg = str(e)
            assert expect in msg, "%s: refused, but the message does not name %r: %s" % (os.path.basename(f), expect, msg)
            continue
        raise AssertionError("%s rendered; it must be refused" % os.path.basename(f))
    print("  %d bad values files refused, each naming the offending key" % len(files))


# The Prometheus scaler's metadata keys (KEDA v2.20.2, pkg/scalers/prometheus_scaler.go):
# the CRD types metadata as a free string map, so a misspelt key passes the schema.
KEDA_PROMETHEUS_KEYS = {"serverAddress", "query", "queryParameters", "threshold", "activationThreshold", "namespace",
                        "customHeaders", "ignoreNullValues", "unsafeSsl", "awsRegion", "timeout", "identityOwner"}


def strict_schema(s):
    """A CRD's openAPIV3Schema as the API server applies it: an object schema that does
    not preserve unknown fields prunes what it does not declare (kubectl
    --validate=strict refuses it), so here such a field is an error. The CEL rules
    (x-kubernetes-validations) are checked by hand."""
    if isinstance(s, list):
        return [strict_schema(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {k: strict_schema(v) for k, v in s.items() if not k.startswith("x-kubernetes-")}
    if s.get("x-kubernetes-int-or-string"):
        out = {k: v for k, v in out.items() if k != "type"}
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out \
            and not s.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def keda_scaled_object():
    import jsonschema
    import yaml
    with open(KEDA_CRD) as f:
        crd = yaml.safe_load(f)
    assert crd["spec"]["group"] == "keda.sh" and crd["spec"]["names"]["kind"] == "ScaledObject", crd["metadata"]
    version = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]][0]
    schema = strict_schema(version["schema"]["openAPIV3Schema"])
    d = docs("fleet-keda")
    so = chartlib.find(d, "ScaledObject")
    assert so["apiVersion"] == "keda.sh/" + version["name"], so["apiVersion"]
    jsonschema.validate(so, schema)
    # Strict means strict: a misspelt field and a wrong type are refused.
    for bad in ({"metricTyp": "Value"}, {"useCachedMetrics": "yes"}):
        wrong = json.loads(json.dumps(so))
        wrong["spec"]["triggers"][0].update(bad)
        try:
            jsonschema.validate(wrong, schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError("the schema took %s" % bad)
    spec = so["spec"]
    # The CRD's CEL rule, and the target: the server Deployment, which leaves replicas to KEDA.
    assert spec["minReplicaCount"] == 2 <= spec["maxReplicaCount"] == 6, spec
    dep = chartlib.find(d, "Deployment", "-server")
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    assert "replicas" not in dep["spec"], dep["spec"]
    assert chartlib.find(docs("default"), "Deployment", "-server")["spec"]["replicas"] == 1
    trig = {t["name"]: t for t in spec["triggers"]}
    assert set(trig) == {"ttft-p99", "queue-depth", "kv-cache-usage"}, trig
    records = {r["record"] for g in chartlib.find(d, "PrometheusRule")["spec"]["groups"] for r in g["rules"]
               if "record" in r}
    for name, (mtype, threshold) in {"ttft-p99": ("Value", "0.5"), "queue-depth": ("AverageValue", "8"),
                                     "kv-cache-usage": ("Value", "0.85")}.items():
        t = trig[name]
        assert t["type"] == "prometheus" and t["metricType"] == mtype, t
        assert set(t["metadata"]) <= KEDA_PROMETHEUS_KEYS, t["metadata"]
        assert t["metadata"]["threshold"] == threshold, t
        assert t["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090", t
        used = re.findall(r"corvid:[a-z0-9_:]+", t["metadata"]["query"])
        assert len(used) == 1 and used[0] in records, (t, records)
        assert '{namespace="ai", service="corvid"}' in t["metadata"]["query"], t
    notes = RENDERS["fleet-keda"]["corvid/templates/NOTES.txt"]
    assert "Servers: 2-6 x" in notes and "scaling  KEDA ScaledObject corvid-server:" in notes, notes
    assert "Servers: 1 x" in RENDERS["default"]["corvid/templates/NOTES.txt"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == chartlib.find(docs("fleet-hpa"), "HorizontalPodAutoscaler")["spec"]["behavior"], behavior
    print("  ScaledObject valid against KEDA %s's CRD (%s)" % (os.path.basename(KEDA_CRD)[len("keda.sh_scaledobjects-"):-5],
                                                            version["name"]))


def hpa_and_behaviour():
    d = docs("fleet-hpa")
    hpa = chartlib.find(d, "HorizontalPodAutoscaler")
    assert not [x for _, x in d if x["kind"] == "ScaledObject"]
    spec = hpa["spec"]
    dep = chartlib.find(d, "Deployment", "-server")
    assert spec["scaleTargetRef"]["name"] == dep["metadata"]["name"] and "replicas" not in dep["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6), spec
    metrics = {m["external"]["metric"]["name"]: m["external"] for m in spec["metrics"]}
    assert metrics["corvid_time_to_first_token_seconds_p99"]["target"] == {"type": "Value", "value": "500m"}
    assert metrics["corvid_queue_depth"]["target"] == {"type": "AverageValue", "averageValue": "8000m"}
    assert metrics["corvid_kv_cache_usage_ratio"]["target"] == {"type": "Value", "value": "850m"}
    for m in metrics.values():
        assert m["metric"]["selector"] == {"matchLabels": {"service": "corvid"}}, m
    # Each metric is one the adapter rules of values.yaml serve, from a recorded series.
    values = chartlib.load_values(os.path.join(chartlib.CHART, "values.yaml"))
    rules = {r["name"]["as"]: r for r in values["autoscaling"]["hpa"]["adapterRules"]}
    assert set(rules) == set(metrics), (rules, metrics)
    records = {r["record"] for g in chartlib.find(d, "PrometheusRule")["spec"]["groups"] for r in g["rules"]
               if "record" in r}
    for r in rules.values():
        assert r["seriesQuery"].split("{")[0] in records, r
        assert "<<.Series>>{<<.LabelMatchers>>}" in r["metricsQuery"], r
        assert r["resources"] == {"overrides": {"namespace": {"resource": "namespace"}}}, r
    # Scale-down: one pod per period, and a period no shorter than the grace period,
    # so a leaving pod has drained (preStop + drain_timeout_s) before the next goes.
    down = spec["behavior"]["scaleDown"]
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}] and 60 >= grace, (down, grace)
    assert down["stabilizationWindowSeconds"] == 300 and down["selectPolicy"] == "Min", down
    # Refused: a period shorter than the grace period, min above max, no recording rules.
    for values, needle in (({"autoscaling": {"enabled": True, "scaleDown": {"periodSeconds": 30}},
                             "metrics": {"prometheusRule": {"enabled": True}}}, "autoscaling.scaleDown.periodSeconds"),
                           ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2},
                             "metrics": {"prometheusRule": {"enabled": True}}}, "autoscaling.minReplicas"),
                           ({"autoscaling": {"enabled": True}}, "metrics.prometheusRule.enabled")):
        try:
            chartlib.render(values)
        except helm_python.HelmError as e:
            assert needle in str(e), (needle, str(e))
            continue
        raise AssertionError("rendered: %s" % values)


def selects(selector, labels):
    return selector["matchLabels"].items() <= labels.items() and not selector.get("matchExpressions")


def disruption_and_spread():
    for name in RENDERS:
        d = docs(name)
        pdbs = {x["metadata"]["name"]: x for _, x in d if x["kind"] == "PodDisruptionBudget"}
        deps = [x for _, x in d if x["kind"] == "Deployment"]
        for dep in deps:
            labels = dep["spec"]["template"]["metadata"]["labels"]
            mine = [p for p in pdbs.values() if selects(p["spec"]["selector"], labels)]
            assert len(mine) == 1 and mine[0]["spec"]["maxUnavailable"] == 1, (name, dep["metadata"]["name"], mine)
        assert len(pdbs) == len(deps), (name, sorted(pdbs))  # server, control plane, the chart's Redis
        spec = chartlib.find(d, "Deployment", "-server")["spec"]["template"]
        spread = spec["spec"]["topologySpreadConstraints"]
        assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"], spread
        for c in spread:
            assert selects(c["labelSelector"], spec["metadata"]["labels"]) and c["whenUnsatisfiable"] == "ScheduleAnyway"
    off = chartlib.documents(chartlib.render({"server": {"podDisruptionBudget": {"enabled": False}, "topologySpread": []},
                                              "controlplane": {"enabled": False}}))
    assert not [x for _, x in off if x["kind"] == "PodDisruptionBudget"]
    assert "topologySpreadConstraints" not in chartlib.find(off, "Deployment", "-server")["spec"]["template"]["spec"]


def network_policy():
    d = docs("fleet-keda")
    pols = {x["metadata"]["name"]: x for _, x in d if x["kind"] == "NetworkPolicy"}
    assert set(pols) == {"corvid-server", "corvid-controlplane"}, pols
    assert not [x for _, x in docs("default") if x["kind"] == "NetworkPolicy"]
    pods = {n: chartlib.find(d, "Deployment", n)["spec"]["template"] for n in ("-server", "-controlplane")}
    pods["test"] = {"metadata": chartlib.find(d, "Pod", "-test")["metadata"]}
    for pol, target in ((pols["corvid-server"], "-server"), (pols["corvid-controlplane"], "-controlplane")):
        tpl = pods[target]
        assert selects(pol["spec"]["podSelector"], tpl["metadata"]["labels"]) and pol["spec"]["policyTypes"] == ["Ingress"]
        ports = {p["name"] for c in tpl["spec"]["containers"] for p in c["ports"]}
        for rule in pol["spec"]["ingress"]:
            assert rule["from"], "a rule without peers admits everyone: %s" % rule
            assert {p["port"] for p in rule["ports"]} <= ports, (rule, ports)
    rules = {r["ports"][0]["port"]: r["from"] for r in pols["corvid-server"]["spec"]["ingress"]}
    assert set(rules) == {"grpc", "metrics"}, rules
    admitted = lambda peers, labels: any("podSelector" in p and "namespaceSelector" not in p  # noqa: E731
                                         and selects(p["podSelector"], labels) for p in peers)
    assert admitted(rules["grpc"], pods["-controlplane"]["metadata"]["labels"])
    assert admitted(rules["grpc"], pods["test"]["metadata"]["labels"])
    assert admitted(rules["grpc"], {"app.kubernetes.io/component": "gateway"})
    assert not admitted(rules["grpc"], {"app.kubernetes.io/component": "other"})
    prom = chartlib.load_values(os.path.join(chartlib.CHART, "values.yaml"))["networkPolicy"]["prometheus"]
    assert rules["metrics"] == prom == pols["corvid-controlplane"]["spec"]["ingress"][0]["from"], rules["metrics"]
    try:
        chartlib.render({"networkPolicy": {"enabled": True, "clients": []}, "controlplane": {"enabled": False},
                         "tests": {"enabled": False}})
    except helm_python.HelmError as e:
        assert "networkPolicy.clients is empty" in str(e), str(e)
    else:
        raise AssertionError("a gRPC rule without peers rendered")


def helm_test_pod():
    pod = chartlib.find(docs("default"), "Pod", "-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][2]
    svc = chartlib.find(docs("default"), "Service", "corvid")
    port = [p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"][0]
    addr = "corvid.ai.svc:%d" % port
    assert re.search(r"^corvidctl health -a %s --service corvid\.v1\.Inference " % re.escape(addr), script, re.M), script
    assert re.search(r"^corvidctl generate -a %s -p 'Once upon a time' -n 8 " % re.escape(addr), script, re.M), script


def promql_names():
    """(name, where) of every corvid_* metric in the dashboard and the alert rules."""
    found = []
    dash = json.loads(chartlib.find(docs("default"), "ConfigMap", "-dashboard")["data"]["corvid.json"])
    exprs = [("dashboard: " + p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [("dashboard variable " + v["name"], v["query"]["query"]) for v in dash["templating"]["list"]
              if isinstance(v.get("query"), dict)]
    rule = chartlib.find(docs("gpu-canary-tls"), "PrometheusRule")
    exprs += [("rule " + r.get("alert", r.get("record")), r["expr"]) for g in rule["spec"]["groups"] for r in g["rules"]]
    for where, e in exprs:
        # Not the recorded names (level:metric:operations): the rules make those.
        for n in re.findall(r"\bcorvid_[a-z0-9_]+\b(?!:)", e):
            found.append((n, where))
    return found, exprs


def controlplane_exports(server_addr):
    """The names a real corvid-controlplane exports while it leads a rollout of one
    registered version on a real etcd, driving the server at server_addr and failing
    to reach a second address where nothing listens (so server errors are counted)."""
    etcd = Etcd()
    cp = None
    try:
        cp = ControlPlane("cp-dashboard", {"etcd": etcd.url, "servers": [server_addr, "127.0.0.1:%d" % free_port()],
                                           "poll_ms": 200, "election_ttl_s": 3, "admin_timeout_ms": 500})
        cli(etcd.url, "version", "add", "stories", "v2", "--uri", MODEL)
        cli(etcd.url, "rollout", "start", "stories", "v2")
        wanted = {"corvid_rollout_phase", "corvid_controlplane_server_errors_total"}
        cp.wait(lambda: wanted <= {n for n, _ in cp.metrics()}, 20, " and ".join(sorted(wanted)))
        return {n for n, _ in cp.metrics()}
    finally:
        if cp:
            cp.stop()
        etcd.destroy()


def metric_names_exported():
    used, exprs = promql_names()
    assert len(exprs) >= 15, len(exprs)
    mport = free_port()
    srv = Server("--model", MODEL, "--metrics-listen", "127.0.0.1:%d" % mport)
    try:
        # One request first, so every per-version series has samples.
        r = subprocess.run([os.path.join(BIN, "corvidctl"), "generate", "-a", srv.addr, "-p", "Once upon a time",
                            "-n", "8", "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=90)
        assert r.returncode == 0, r.stdout
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as resp:
            text = resp.read().decode()
        # The probes' service names, asked of the real server: all SERVING once loaded.
        health_services_serving(srv.addr)
        from_cp = controlplane_exports(srv.addr)
    finally:
        srv.stop()
    from_server = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}
    names = {n for n, _ in used}
    missing = sorted({(n, w) for n, w in used if n not in from_server | from_cp and n not in GPU_ONLY})
    assert not missing, "used but not exported: %s" % missing
    source = open(os.path.join(chartlib.ROOT, "server", "service", "metrics.c")).read()
    for n in sorted(GPU_ONLY):
        assert n in names, "GPU_ONLY lists %s, which no panel or rule uses" % n
        assert '"%s{gpu=' % n in source, "server/service/metrics.c does not write %s" % n
        print("  GPU only (written by server/service/metrics.c where NVML finds GPUs; none here): %s" % n)
    print("  %d names used: %d exported by the server, %d by the control plane scraped here, %d GPU only" % (
        len(names), len(names & from_server), len(names & from_cp), len(names & GPU_ONLY)))


def health_services_serving(addr):
    import grpc
    _, _, health_pb2 = proto_modules()
    wanted = set()
    for name in RENDERS:
        spec = chartlib.find(docs(name), "Deployment", "-server")["spec"]["template"]["spec"]["containers"][0]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            wanted.add(spec[kind]["grpc"].get("service", ""))
    with grpc.insecure_channel(addr) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                               response_deserializer=health_pb2.HealthCheckResponse.FromString)
        for svc in sorted(wanted):
            st = check(health_pb2.HealthCheckRequest(service=svc), timeout=5).status
            assert st == health_pb2.HealthCheckResponse.SERVING, (svc, st)
    print("  probe services SERVING on a loaded server: %s" % sorted(wanted))


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def fetch_model_script():
    script = os.path.join(chartlib.CHART, "files", "fetch-model.sh")
    www = tempfile.mkdtemp(dir=TMP)
    body = os.urandom(4096 + int.from_bytes(os.urandom(2), "little"))
    with open(os.path.join(www, "m.gguf"), "wb") as f:
        f.write(body)
    import hashlib
    good = hashlib.sha256(body).hexdigest()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          lambda *a, **k: _Files(*a, directory=www, **k))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    uri = "http://127.0.0.1:%d/m.gguf" % srv.server_address[1]

    def run(dest, uri, sha):
        env = dict(os.environ, MODEL_PATH=dest, MODEL_URI=uri, MODEL_SHA256=sha, MODEL_DOWNLOAD_TIMEOUT="30")
        return subprocess.run(["sh", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=60)
    try:
        vol = tempfile.mkdtemp(dir=TMP)
        dest = os.path.join(vol, "model.gguf")
        r = run(dest, uri, good.upper())
        assert r.returncode == 0 and open(dest, "rb").read() == body, r.stdout
        # Kept on the next start: the URI is dead now and must not be needed.
        r = run(dest, "http://127.0.0.1:1/gone", good)
        assert r.returncode == 0 and "present" in r.stdout, r.stdout
        vol2 = tempfile.mkdtemp(dir=TMP)
        dest2 = os.path.join(vol2, "model.gguf")
        wrong = "0" * 64
        r = run(dest2, uri, wrong)
        assert r.returncode != 0 and good in r.stdout and wrong in r.stdout, r.stdout
        assert os.listdir(vol2) == [], os.listdir(vol2)
        r = run(dest2, "", "")
        assert r.returncode != 0 and "no model at" in r.stdout, r.stdout
        r = run(dest, "", wrong)
        assert r.returncode != 0 and good in r.stdout, r.stdout
    finally:
        srv.shutdown()


def dockerfile_matches_ci():
    """Parsed by BuildKit's parser: both variants resolve to stages, the build runs the
    commands of .ci/run, the image runs as the chart's user and exposes its ports."""
    import dockerfile
    cmds = dockerfile.parse_file(os.path.join(chartlib.ROOT, "Dockerfile"))
    ci = open(os.path.join(chartlib.ROOT, ".ci", "run")).read()
    assert "apt-get install -y -qq $(cat .ci/apt-packages)" in ci
    for target in ('make -j"$nproc_" all', 'make -j"$nproc_" CUDA=1 BUILD=build/cuda all'):
        assert target in ci, ".ci/run no longer runs %r: update the Dockerfile with it" % target
    stages, current, runs, default_variant = {}, None, {}, None
    for c in cmds:
        if c.cmd == "ARG" and current is None and c.value[0].startswith("VARIANT="):
            default_variant = c.value[0].split("=", 1)[1]
        if c.cmd == "FROM":
            current = c.value[2] if len(c.value) == 3 else "final"
            stages[current] = c.value[0]
            runs[current] = []
        elif c.cmd == "RUN":
            runs[current].append(c.value[0])
    assert default_variant == "cuda", default_variant
    for variant in ("cuda", "cpu"):
        assert "build-" + variant in stages and "runtime-" + variant in stages, (variant, stages)
    assert stages["build"] == "build-${VARIANT}" and stages["final"] == "runtime-${VARIANT}", stages
    assert "devel" in stages["build-cuda"] and "runtime" in stages["runtime-cuda"], stages
    build = " ".join(runs["build"])
    assert "apt-get install -y -qq $(cat .ci/apt-packages)" in build, build
    assert 'make -j"$(nproc)" all' in build and 'make -j"$(nproc)" CUDA=1 BUILD=build/cuda all' in build, build
    final = [c for c in cmds if c.cmd in ("USER", "EXPOSE")]
    user = [c.value[0] for c in final if c.cmd == "USER"][-1]
    values = chartlib.load_values(os.path.join(chartlib.CHART, "values.yaml"))
    ctx = values["podSecurityContext"]
    assert user == "%d:%d" % (ctx["runAsUser"], ctx["runAsGroup"]), user
    exposed = {int(p) for c in final if c.cmd == "EXPOSE" for p in c.value}
    assert exposed == {values["server"]["port"], values["server"]["metricsPort"]}, exposed
    ignore = open(os.path.join(chartlib.ROOT, ".dockerignore")).read().split()
    assert "build" in ignore and ".git" in ignore, ignore


checks.run("render default, values-gpu-canary-tls.yaml, download+etcd", render_all)
if len(RENDERS) == 5:
    checks.run("kubernetes schemas (strict)", kube_schemas)
    checks.run("prometheus-operator objects", prometheus_operator_objects)
    checks.run("yamllint", yamllint_all)
    checks.run("helm lint --strict", helm_lint)
    checks.run("probe ports are container ports", probe_ports)
    checks.run("server.json passes corvid-server --check-config", server_config_accepted)
    checks.run("TLS, auth, device and tp reach the server through server.json", server_keys)
    checks.run("controlplane.json", controlplane_config)
    checks.run("control plane credentials: whole Secret volumes, no subPath, no env", credential_mounts)
    checks.run("control plane takes rotated Secrets from the pod's volumes, refuses a bad one",
               controlplane_rotation)
    checks.run("grace period > preStop + drain timeout", drain_within_grace)
    checks.run("non-root, read-only root, limits", security_contexts)
    checks.run("GPU and CPU-only modes, control plane", gpu_and_cpu_modes)
    checks.run("headless Service for client-side balancing, connection age", balancing_service)
    checks.run("tracing values reach the server and control plane configs", tracing_config)
    checks.run("model storage", model_storage)
    checks.run("trial etcd", trial_etcd)
    checks.run("response cache: off, the chart's Redis, an existing Redis", response_cache)
    checks.run("chart-made TLS and JWT secrets", chart_made_secrets)
    checks.run("helm test pod", helm_test_pod)
    checks.run("KEDA ScaledObject against KEDA's CRD schema (strict)", keda_scaled_object)
    checks.run("HPA on prometheus-adapter's metrics, scale-down that drains", hpa_and_behaviour)
    checks.run("disruption budgets and topology spread select the pods", disruption_and_spread)
    checks.run("NetworkPolicy admits the clients, control plane, test pod and Prometheus", network_policy)
    checks.run("dashboard and alert metric names are exported", metric_names_exported)
checks.run("every value in values.yaml is commented", values_commented)
checks.run("bad values are refused", bad_values_rejected)
checks.run("fetch-model.sh", fetch_model_script)
checks.run("Dockerfile uses .ci/run's build commands", dockerfile_matches_ci)
checks.finish()
