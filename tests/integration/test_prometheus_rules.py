"""The chart's PrometheusRule checked by Prometheus itself (Debian's `prometheus`
package: promtool and the server):

- `promtool check rules` on the rules rendered by real Helm, with and without the
  control plane's alerts;
- the error ratio's server-fault codes are those of the control plane's rollout
  analysis (controlplane/analysis.c), over every answer but CANCELLED, as it counts;
- `promtool test rules` runs tests/prometheus/corvid-rules-test.yaml, in which every
  alert of the rendered rules fires in one case and stays silent in another; rules
  rendered with higher thresholds must fail those cases (so the cases test the
  thresholds, not just the names);
- live: a real Prometheus (127.0.0.1, free port, temp dir, 1 s scrapes and rule
  evaluations) scrapes a real corvid-server (stories260K, one sequence at a time)
  that bench-load overloads. The P99 query of the rendered KEDA ScaledObject and the
  matching prometheus-adapter rule cross the chart's threshold while
  CorvidP99LatencyHigh fires, and the p99 Prometheus computes agrees with the TTFTs
  bench-load measured itself. The rules are rendered with a short window and `for`
  and a 100 ms threshold through the chart's values, so that this fits in a minute.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helm"))
import chartlib  # noqa: E402
from corvid_testlib import BIN, DATA, TMP, Checks, Server, free_port, spawn  # noqa: E402

MODEL = os.path.join(DATA, "models", "stories260K.gguf")
UNIT_TESTS = os.path.join(chartlib.ROOT, "tests", "prometheus", "corvid-rules-test.yaml")
# What corvid-rules-test.yaml was written for: TLS on (the credentials alert) with the
# default thresholds, release "corvid" in namespace "ai".
UNIT_VALUES = {"metrics": {"prometheusRule": {"enabled": True}},
               "tls": {"enabled": True, "existingSecret": "corvid-grpc-tls"}}
# Seconds. stories260K generates a 400-token answer in 10-30 ms here, so with one
# sequence at a time and 32 clients a request waits for about 16 others: 0.15-0.5 s.
LIVE_THRESHOLD = 0.025

checks = Checks()
try:
    chartlib.ensure_tools()
except Exception as e:  # nothing here runs without Helm: fail loudly, do not skip
    print("FAIL installing the chart tools: %s" % e)
    print("0 passed, 1 failed")
    sys.exit(1)
import yaml  # noqa: E402


def tool(name):
    path = shutil.which(name)
    assert path, "%s not found: install Debian's prometheus package (make deps)" % name
    return path


def render(values):
    return chartlib.documents(chartlib.render(values))


def write_rules(docs, path):
    rule = chartlib.find(docs, "PrometheusRule")
    with open(path, "w") as f:
        yaml.safe_dump({"groups": rule["spec"]["groups"]}, f, sort_keys=False)
    return rule


def alerts_of(rule):
    return [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args, cwd=None):
    r = subprocess.run([tool("promtool")] + list(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    return r.returncode, r.stdout


def check_rules():
    variants = {"plain": {"metrics": {"prometheusRule": {"enabled": True}}, "controlplane": {"enabled": False}},
                "tls": UNIT_VALUES,
                "gpu-canary-tls": chartlib.load_values(os.path.join(chartlib.CHART, "values-gpu-canary-tls.yaml"))}
    for name, values in variants.items():
        path = os.path.join(TMP, "check-%s.yaml" % name)
        rule = write_rules(render(values), path)
        rc, out = promtool("check", "rules", path)
        n = sum(len(g["rules"]) for g in rule["spec"]["groups"])
        assert rc == 0 and "SUCCESS: %d rules found" % n in out, (name, out)
        print("  %s: %d rules (%s) pass promtool check rules" % (name, n, ", ".join(alerts_of(rule))))
    # promtool must refuse what is wrong, or passing it proves nothing.
    bad = os.path.join(TMP, "bad-rules.yaml")
    with open(bad, "w") as f:
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "sum(rate(x[5m])"}]}]}, f)
    rc, out = promtool("check", "rules", bad)
    assert rc != 0 and "parse error" in out, out


def run_unit_tests(values):
    d = os.path.join(TMP, "unit-%d" % len(os.listdir(TMP)))
    os.makedirs(d)
    rule = write_rules(render(values), os.path.join(d, "corvid-rules.yaml"))
    shutil.copy(UNIT_TESTS, d)
    rc, out = promtool("test", "rules", os.path.basename(UNIT_TESTS), cwd=d)
    return rule, rc, out


def unit_tests():
    rule, rc, out = run_unit_tests(UNIT_VALUES)
    assert rc == 0 and "SUCCESS" in out, out
    # Every alert the chart renders has a case where it fires and one where it does not.
    with open(UNIT_TESTS) as f:
        cases = [c for t in yaml.safe_load(f)["tests"] for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    alerts = set(alerts_of(rule))
    assert alerts <= fires and alerts <= silent, ("alerts without both cases", alerts - (fires & silent))
    assert len(alerts) == 7, alerts
    # Each firing case names the alert's runbook section.
    for c in cases:
        for a in c["exp_alerts"]:
            assert a["exp_annotations"]["runbook_url"].startswith("README.md#runbook-"), a
    print("  %d cases over %d alerts: %s" % (len(cases), len(alerts), ", ".join(sorted(alerts))))
    # Thresholds above what the cases feed: the firing cases must fail, naming the alerts.
    higher = json.loads(json.dumps(UNIT_VALUES))
    higher["metrics"]["prometheusRule"].update(gpuUtilization=0.95, p99LatencySeconds=1.0, errorRate=0.1)
    _, rc, out = run_unit_tests(higher)
    assert rc != 0, out
    for name in ("CorvidGPUUtilizationHigh", "CorvidP99LatencyHigh", "CorvidErrorRateHigh"):
        assert "alertname: %s, time: 10m" % name in out, (name, out)


def analysis_codes():
    """The gRPC codes controlplane/analysis.c counts as server faults (the case labels
    of cv_analysis_is_server_fault)."""
    src = open(os.path.join(chartlib.ROOT, "controlplane", "analysis.c")).read()
    body = re.search(r"bool cv_analysis_is_server_fault\(int code\) \{(.*?)\n\}", src, re.S).group(1)
    codes = set(re.findall(r"case CORVID_([A-Z_]+):", body)) | set(re.findall(r"case [0-9]+: /\* ([A-Z_]+) \*/", body))
    assert len(codes) == len(re.findall(r"case ", body)), body
    return codes


def same_errors_as_analysis():
    """The alerts' error ratio counts what the rollout analysis counts: its server-fault
    codes over every answer but CANCELLED (the promtool cases feed each kind)."""
    values = chartlib.load_values(os.path.join(chartlib.CHART, "values.yaml"))
    chart = set(values["metrics"]["prometheusRule"]["serverErrorCodes"].split("|"))
    assert chart == analysis_codes(), (chart, analysis_codes())
    rule = chartlib.find(render(UNIT_VALUES), "PrometheusRule")
    expr = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]
            if r.get("record") == "corvid_version:requests:error_ratio"][0]
    assert 'code!="CANCELLED"' in expr.split("/")[1], expr
    print("  server faults: %s" % "|".join(sorted(chart)))


class Prometheus:
    """A real Prometheus on a free loopback port with its data in a temp dir; stopped by PID."""

    def __init__(self, port, rules_path, target, labels):
        self.dir = os.path.join(TMP, "prometheus")
        os.makedirs(self.dir)
        cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
               "rule_files": [rules_path],
               "scrape_configs": [{"job_name": "corvid", "static_configs": [{"targets": [target], "labels": labels}]}]}
        path = os.path.join(self.dir, "prometheus.yml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        self.port = port
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = spawn([tool("prometheus"), "--config.file=" + path, "--storage.tsdb.path=" + os.path.join(
            self.dir, "data"), "--web.listen-address=127.0.0.1:%d" % self.port], stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.proc.poll() is None, "prometheus exited %d:\n%s" % (self.proc.returncode, self.output())
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready in 30 s:\n" + self.output())

    def output(self):
        with open(os.path.join(self.dir, "log"), "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def api(self, path, **params):
        url = self.url + "/api/v1/" + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query):
        """The single value of an instant query, or None when it has no result."""
        res = self.api("query", query=query)["result"]
        assert len(res) <= 1, (query, res)
        return float(res[0]["value"][1]) if res else None

    def firing(self, name):
        return [a for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == name and a["state"] == "firing"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def adapter_query(rule, labels):
    """A prometheus-adapter external rule's query as the adapter builds it for an HPA
    that selects `labels` in namespace ai."""
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
    matchers = ",".join('%s="%s"' % kv for kv in sorted(dict(labels, namespace="ai").items()))
    return rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)


def live_p99_crosses():
    mport = free_port()
    prom_port = free_port()
    values = {"metrics": {"prometheusRule": {"enabled": True, "window": "10s", "for": "3s",
                                             "p99LatencySeconds": LIVE_THRESHOLD}},
              "autoscaling": {"enabled": True, "mode": "keda", "ttftP99Seconds": LIVE_THRESHOLD,
                              "keda": {"serverAddress": "http://127.0.0.1:%d" % prom_port}}}
    docs = render(values)
    rules_path = os.path.join(TMP, "live-rules.yaml")
    write_rules(docs, rules_path)
    so = chartlib.find(docs, "ScaledObject")
    trig = {t["name"]: t for t in so["spec"]["triggers"]}
    ttft = trig["ttft-p99"]
    assert float(ttft["metadata"]["threshold"]) == LIVE_THRESHOLD and ttft["metricType"] == "Value", ttft
    adapter = chartlib.load_values(os.path.join(chartlib.CHART, "values.yaml"))["autoscaling"]["hpa"]["adapterRules"]
    adapter_ttft = adapter_query([r for r in adapter if r["name"]["as"] == "corvid_time_to_first_token_seconds_p99"][0],
                                 {"service": "corvid"})
    srv = Server("--model", MODEL, "--metrics-listen", "127.0.0.1:%d" % mport, "--max-running", "1",
                 "--max-batch-tokens", "64")
    prom = load = None
    try:
        # The labels prometheus-operator puts on a ServiceMonitor's targets.
        prom = Prometheus(prom_port, rules_path, "127.0.0.1:%d" % mport, {"namespace": "ai", "service": "corvid",
                                                               "pod": "corvid-server-0"})
        deadline = time.time() + 10
        while prom.value('up{job="corvid"}') != 1:
            assert time.time() < deadline, "the server is not scraped: " + prom.output()
            time.sleep(0.3)
        # Nothing was served yet: no p99, nothing fires.
        assert prom.value(ttft["metadata"]["query"]) is None
        assert not prom.firing("CorvidP99LatencyHigh")
        out = os.path.join(TMP, "bench-load.json")
        with open(out, "w") as f:
            load = spawn([os.path.join(BIN, "bench-load"), "--addr", srv.addr, "--concurrency", "32", "--duration",
                          "30", "--max-tokens", "400", "--ignore-eos", "--timeout", "60"], stdout=f,
                         stderr=subprocess.STDOUT)
        t0 = time.time()
        seen = None
        while time.time() < t0 + 30 and load.poll() is None:
            p99 = prom.value(ttft["metadata"]["query"])
            firing = prom.firing("CorvidP99LatencyHigh")
            if p99 is not None and p99 > LIVE_THRESHOLD and firing:
                seen = (time.time() - t0, p99, firing[0]["value"], prom.value(adapter_ttft),
                        prom.value(trig["queue-depth"]["metadata"]["query"]),
                        prom.value(trig["kv-cache-usage"]["metadata"]["query"]))
                break
            time.sleep(0.5)
        assert seen, "p99 did not cross %.3f s with the alert firing in 30 s (last p99 %r):\n%s" % (
            LIVE_THRESHOLD, prom.value(ttft["metadata"]["query"]), srv.output()[-2000:])
        at, p99, alert_value, adapter_p99, queue, kv = seen
        print("  after %.1f s of load: p99 TTFT %.3f s (threshold %.3f), alert value %s, adapter's p99 %.3f s, "
              "queued %s, KV usage %s" % (at, p99, LIVE_THRESHOLD, alert_value, adapter_p99, queue, kv))
        assert adapter_p99 is not None and adapter_p99 > LIVE_THRESHOLD, adapter_p99
        # One sequence at a time, 32 clients: the queue holds most of them.
        assert queue is not None and queue > float(trig["queue-depth"]["metadata"]["threshold"]), queue
        assert kv is not None and 0 < kv <= 1, kv
        load.kill()
        load.wait()
        load = None
        # Prometheus' p99 comes from the server's histogram: it must agree with what the
        # clients measured (bench-load's own run, to the histogram's bucket resolution).
        bench = subprocess.run([os.path.join(BIN, "bench-load"), "--addr", srv.addr, "--concurrency", "32",
                                "--requests", "64", "--max-tokens", "400", "--ignore-eos", "--timeout", "60"],
                               capture_output=True, text=True, timeout=90)
        assert bench.returncode == 0, bench.stdout + bench.stderr
        res = json.loads(bench.stdout)
        time.sleep(2)
        p99_after = prom.value(ttft["metadata"]["query"])
        client_p50_s = res["ttft_ms_p50"] / 1e3
        print("  bench-load alone: TTFT p50 %.3f s p99 %.3f s; Prometheus p99 %.3f s" % (
            client_p50_s, res["ttft_ms_p99"] / 1e3, p99_after))
        assert client_p50_s > LIVE_THRESHOLD, res
        assert client_p50_s <= p99_after, (res, p99_after)
    finally:
        if load and load.poll() is None:
            load.kill()
            load.wait()
        if prom:
            prom.stop()
        srv.stop()


checks.run("promtool check rules on the rendered PrometheusRule", check_rules)
checks.run("promtool test rules: every alert fires and stays silent", unit_tests)
checks.run("error ratio counts the rollout analysis' server faults", same_errors_as_analysis)
checks.run("live: Prometheus sees the autoscaler's p99 cross while the alert fires", live_p99_crosses)
checks.finish()
