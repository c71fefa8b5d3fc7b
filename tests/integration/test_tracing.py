"""OpenTelemetry traces of a real corvid-server, received by an OTLP/HTTP endpoint this
test runs and decoded with the official `opentelemetry-proto` package (PyPI, installed
by `make pydeps` into $CORVID_VENV; the test re-executes itself with the venv's python,
which sees Debian's grpcio and protobuf too).

One gRPC Generate with a W3C traceparent and retrieval (a knowledge base and a live HTTP
source this test serves) must give the span tree request -> {rag.retrieve -> {rag.search,
rag.source news}, queue, prefill, decode} in the caller's trace, children inside their
parents, the engine's phases back to back, gen_ai.* attributes matching the Final
message; the trace id in the request's log line and in the source fetch's audit entry,
and the traceparent sent on to the source naming the fetch's span. Also: an HTTP
completion with a traceparent header, an Admin call, and a request without a
traceparent (a new trace id in its log line; with trace_sample_ratio 0 nothing recorded)."""
import os

from corvid_venv import need

trace_service_pb2 = need("opentelemetry.proto.collector.trace.v1.trace_service_pb2", "the tracing tests")

import base64  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from corvid_testlib import BIN, DATA, TMP, Checks, Server, free_port, proto_modules  # noqa: E402

pb, apb, _ = proto_modules()
MODEL = os.path.join(DATA, "models", "stories260K.gguf")
AUDIT = os.path.join(TMP, "audit.jsonl")
SPAN_KIND_SERVER, SPAN_KIND_CLIENT, SPAN_KIND_INTERNAL = 2, 3, 1

spans_lock = threading.Lock()
spans = []           # decoded opentelemetry.proto.trace.v1.Span, with resource service.name
posts = []           # content types of the POSTs
source_headers = []  # traceparent headers the live source received


class Collector(BaseHTTPRequestHandler):
    """OTLP/HTTP: POST /v1/traces, JSON (OTLP's JSON mapping: hex ids) or protobuf."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ctype = self.headers.get("Content-Type", "")
        req = trace_service_pb2.ExportTraceServiceRequest()
        if ctype.startswith("application/x-protobuf"):
            req.ParseFromString(body)
        else:
            doc = json.loads(body)
            # OTLP/JSON differs from protobuf's JSON mapping only in the ids: hex, not base64.
            for rs in doc.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for sp in ss.get("spans", []):
                        for k in ("traceId", "spanId", "parentSpanId"):
                            if k in sp:
                                sp[k] = base64.b64encode(bytes.fromhex(sp[k])).decode()
            json_format.ParseDict(doc, req)  # strict: an unknown field name fails
        with spans_lock:
            posts.append(ctype)
            for rs in req.resource_spans:
                svc = {a.key: a.value.string_value for a in rs.resource.attributes}.get("service.name")
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        spans.append((svc, sp))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


class Source(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        source_headers.append(self.headers.get("traceparent"))
        body = json.dumps({"results": [{"snippet": "Quill the raven wears a new hat.", "name": "News"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(handler):
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    return http


def attrs(sp):
    out = {}
    for a in sp.attributes:
        v = a.value
        out[a.key] = getattr(v, v.WhichOneof("value"))
    return out


def trace_spans(trace_hex, want, timeout=10):
    """The spans of one trace once at least `want` have arrived, by name."""
    deadline = time.time() + timeout
    while True:
        with spans_lock:
            got = [(s, sp) for s, sp in spans if sp.trace_id.hex() == trace_hex]
        if len(got) >= want or time.time() > deadline:
            return got
        time.sleep(0.1)


def log_lines(srv, needle):
    return [json.loads(l) for l in srv.output().splitlines() if l.startswith("{") and needle in l]


def generate_with_rag(ctx):
    srv = ctx["srv"]
    tid, parent = secrets.token_hex(16), secrets.token_hex(8)
    md = (("traceparent", "00-%s-%s-01" % (tid, parent)),)
    with grpc.insecure_channel(srv.addr) as ch:
        rpc = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        msgs = list(rpc(pb.GenerateRequest(prompt="Who is the mascot Quill?", request_id="traced-1",
                                           sampling=pb.SamplingParams(max_tokens=6, ignore_eos=True),
                                           rag=pb.RagOptions(enable=True, policy="answer")),
                        metadata=md, timeout=60))
    fin = msgs[-1].final
    assert fin.usage.completion_tokens == 6, fin
    got = trace_spans(tid, 7)
    by = {sp.name: sp for _, sp in got}
    names = sorted(by)
    assert names == sorted(["corvid.v1.Inference/Generate", "rag.retrieve", "rag.search", "rag.source news",
                            "queue", "prefill", "decode"]), names
    assert all(svc == "corvid-server" for svc, _ in got), got
    req = by["corvid.v1.Inference/Generate"]
    assert req.parent_span_id.hex() == parent and req.kind == SPAN_KIND_SERVER, req
    parent_of = {"rag.retrieve": req, "queue": req, "prefill": req, "decode": req,
                 "rag.search": by["rag.retrieve"], "rag.source news": by["rag.retrieve"]}
    for name, p in parent_of.items():
        sp = by[name]
        assert sp.parent_span_id == p.span_id, (name, sp.parent_span_id.hex(), p.span_id.hex())
        assert p.start_time_unix_nano <= sp.start_time_unix_nano <= sp.end_time_unix_nano <= p.end_time_unix_nano, \
            (name, sp.start_time_unix_nano, sp.end_time_unix_nano, p.start_time_unix_nano, p.end_time_unix_nano)
    assert len({sp.span_id for _, sp in got}) == len(got), "span ids repeat"
    q, pf, dc = by["queue"], by["prefill"], by["decode"]
    assert q.end_time_unix_nano == pf.start_time_unix_nano and pf.end_time_unix_nano == dc.start_time_unix_nano
    assert by["rag.retrieve"].end_time_unix_nano <= q.start_time_unix_nano, "the engine ran before retrieval ended"
    # The engine's own figures, as the Final message reports them.
    ttft_ns = pf.end_time_unix_nano - q.start_time_unix_nano
    total_ns = dc.end_time_unix_nano - q.start_time_unix_nano
    assert abs(ttft_ns / 1e6 - fin.time_to_first_token_ms) < 1.0, (ttft_ns, fin.time_to_first_token_ms)
    assert abs(total_ns / 1e6 - fin.total_ms) < 1.0, (total_ns, fin.total_ms)
    a = attrs(req)
    assert a["gen_ai.operation.name"] == "text_completion" and a["gen_ai.system"] == "corvid", a
    assert a["gen_ai.usage.output_tokens"] == 6 and a["gen_ai.usage.input_tokens"] == fin.usage.prompt_tokens, a
    assert a["gen_ai.request.max_tokens"] == 6 and a["gen_ai.response.id"] == "traced-1", a
    assert a["gen_ai.response.model"] == fin.model_version, a
    assert [v.string_value for v in a["gen_ai.response.finish_reasons"].values] == ["length"], a
    assert attrs(dc)["gen_ai.usage.output_tokens"] == 6, attrs(dc)
    src = by["rag.source news"]
    sa = attrs(src)
    assert src.kind == SPAN_KIND_CLIENT and sa["http.response.status_code"] == 200, sa
    assert sa["corvid.rag.outcome"] == "ok" and sa["corvid.rag.results"] == 1, sa
    assert attrs(by["rag.search"])["gen_ai.data_source.id"] == "docs", attrs(by["rag.search"])
    # The source was asked with a traceparent naming the fetch's span: its trace goes on.
    assert "00-%s-%s-01" % (tid, src.span_id.hex()) in source_headers, source_headers
    logs = log_lines(srv, '"request_id":"traced-1"')
    assert [l["trace_id"] for l in logs if l.get("msg") == "request"] == [tid], logs
    audit = [json.loads(l) for l in open(AUDIT)]
    fetches = [e for e in audit if e["event"] == "external_request" and e.get("trace_id") == tid]
    assert len(fetches) == 1 and fetches[0]["outcome"] == "ok", audit
    ctx["trace"] = tid
    print("     %d spans in trace %s; queue %.2f ms, prefill %.2f ms, decode %.2f ms" % (
        len(got), tid, (q.end_time_unix_nano - q.start_time_unix_nano) / 1e6,
        (pf.end_time_unix_nano - pf.start_time_unix_nano) / 1e6, (dc.end_time_unix_nano - dc.start_time_unix_nano) / 1e6))


def http_completion(ctx):
    srv, port = ctx["srv"], ctx["http_port"]
    tid, parent = secrets.token_hex(16), secrets.token_hex(8)
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 4}).encode()
    req = urllib.request.Request("http://127.0.0.1:%d/v1/completions" % port, data=body,
                                 headers={"Content-Type": "application/json", "X-Request-Id": "traced-http",
                                          "traceparent": "00-%s-%s-01" % (tid, parent)})
    with urllib.request.urlopen(req, timeout=60) as r:
        out = json.loads(r.read())
    got = trace_spans(tid, 4)
    by = {sp.name: sp for _, sp in got}
    assert sorted(by) == sorted(["POST /v1/completions", "queue", "prefill", "decode"]), sorted(by)
    root = by["POST /v1/completions"]
    assert root.parent_span_id.hex() == parent and root.kind == SPAN_KIND_SERVER
    a = attrs(root)
    assert a["gen_ai.operation.name"] == "text_completion" and a["http.request.method"] == "POST", a
    assert a["gen_ai.usage.output_tokens"] == out["usage"]["completion_tokens"], (a, out["usage"])
    assert all(by[n].parent_span_id == root.span_id for n in ("queue", "prefill", "decode"))
    logs = log_lines(srv, '"request_id":"traced-http"')
    assert [l["trace_id"] for l in logs if l.get("msg") == "request"] == [tid], logs


def admin_traced(ctx):
    srv = ctx["srv"]
    tid, parent = secrets.token_hex(16), secrets.token_hex(8)
    with grpc.insecure_channel(srv.addr) as ch:
        st = ch.unary_unary("/corvid.v1.Admin/GetStatus", request_serializer=apb.GetStatusRequest.SerializeToString,
                            response_deserializer=apb.GetStatusResponse.FromString)(apb.GetStatusRequest(), timeout=30)
        version = st.slots[0].version
        ch.unary_unary("/corvid.v1.Admin/SetTraffic", request_serializer=apb.SetTrafficRequest.SerializeToString,
                       response_deserializer=apb.GetStatusResponse.FromString)(
            apb.SetTrafficRequest(weights=[apb.TrafficWeight(version=version, weight=100)]),
            metadata=(("traceparent", "00-%s-%s-01" % (tid, parent)),), timeout=30)
    got = trace_spans(tid, 1)
    assert [sp.name for _, sp in got] == ["corvid.v1.Admin/SetTraffic"], got
    sp = got[0][1]
    assert sp.parent_span_id.hex() == parent and attrs(sp)["corvid.admin.action"] == "traffic %s=100" % version
    acts = [json.loads(l) for l in open(AUDIT) if '"admin_action"' in l]
    assert acts and acts[-1]["trace_id"] == tid, acts


def untraced_gets_new_trace(ctx):
    """No traceparent: a new trace id (in the log line), not recorded at ratio 0."""
    srv = ctx["srv"]
    with grpc.insecure_channel(srv.addr) as ch:
        rpc = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        list(rpc(pb.GenerateRequest(prompt="Once", request_id="untraced", sampling=pb.SamplingParams(max_tokens=2)),
                 metadata=(("traceparent", "00-zz-not-a-header"),), timeout=60))
    logs = [l for l in log_lines(srv, '"request_id":"untraced"') if l.get("msg") == "request"]
    assert len(logs) == 1 and re.fullmatch(r"[0-9a-f]{32}", logs[0]["trace_id"]), logs
    assert logs[0]["trace_id"] != ctx.get("trace")
    time.sleep(2.5)  # two flush intervals
    assert not trace_spans(logs[0]["trace_id"], 1, timeout=0), "an unsampled trace was exported"


def dropped_counted_and_metrics(ctx):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % ctx["metrics_port"], timeout=5) as r:
        text = r.read().decode()
    exported = float(re.search(r"^corvid_trace_spans_exported_total (\S+)$", text, re.M).group(1))
    with spans_lock:
        n = len(spans)
    assert exported == n, (exported, n)
    assert re.search(r'^corvid_trace_spans_dropped_total\{reason="queue_full"\} 0$', text, re.M), text
    assert all(c.startswith("application/json") for c in posts), posts


def build_kb():
    src = os.path.join(TMP, "docs.jsonl")
    with open(src, "w") as f:
        f.write(json.dumps({"id": "mascot", "title": "Mascot", "text": "The mascot is a raven named Quill."}) + "\n")
    out = os.path.join(TMP, "docs.cvidx")
    subprocess.run([os.path.join(BIN, "corvid-index"), "build", src, "-o", out], check=True, capture_output=True)
    return out


def main():
    collector, source = serve(Collector), serve(Source)
    sources = os.path.join(TMP, "sources.json")
    with open(sources, "w") as f:
        json.dump({"budget_ms": 2000, "sources": [{"name": "news", "url": "http://127.0.0.1:%d/s?q={query}" %
                                                   source.server_port, "items": "/results", "text": "/snippet",
                                                   "title": "/name"}]}, f)
    policy = os.path.join(TMP, "policy.json")
    with open(policy, "w") as f:
        json.dump({"audit_log": AUDIT}, f)
    ctx = {"http_port": free_port(), "metrics_port": free_port()}
    ctx["srv"] = Server("--model", MODEL, "--threads", "1", "--rag-kb", "docs=" + build_kb(), "--rag-sources", sources,
                        "--rag-min-coverage", "0", "--auth-config", policy,
                        "--http-listen", "127.0.0.1:%d" % ctx["http_port"],
                        "--metrics-listen", "127.0.0.1:%d" % ctx["metrics_port"],
                        "--otlp-endpoint", "http://127.0.0.1:%d/v1/traces" % collector.server_port,
                        "--trace-sample-ratio", "0")
    c = Checks()
    try:
        c.run("gRPC Generate with RAG: span tree, ids, timings, gen_ai attributes, log line, audit, "
              "traceparent to the source", generate_with_rag, ctx)
        c.run("HTTP completion with a traceparent header", http_completion, ctx)
        c.run("Admin SetTraffic: a span in the caller's trace, trace id in the audit entry", admin_traced, ctx)
        c.run("no (or a malformed) traceparent: a new trace id, unsampled at ratio 0", untraced_gets_new_trace, ctx)
        c.run("every exported span counted in /metrics, none dropped", dropped_counted_and_metrics, ctx)
    finally:
        ctx["srv"].stop()
        collector.shutdown()
        source.shutdown()
    c.finish()


if __name__ == "__main__":
    main()
