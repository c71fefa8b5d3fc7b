"""corvid-server's /metrics, /healthz and /readyz, parsed with prometheus_client's text
parser (an independent implementation of the exposition format). A stream cancelled
mid-way must hand its KV blocks back, visibly in corvid_kv_blocks_used."""
import json
import os
import threading
import time
import urllib.error
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from corvid_testlib import DATA, GEMMA, Checks, Server, free_port, have_model, proto_modules

pb, _, _ = proto_modules()
MODEL = os.path.join(DATA, "models", "stories260K.gguf")
NAMES = ["corvid_requests", "corvid_time_to_first_token_seconds", "corvid_inter_token_latency_seconds",
         "corvid_request_duration_seconds", "corvid_generated_tokens", "corvid_queue_depth",
         "corvid_running_sequences", "corvid_kv_blocks_used", "corvid_kv_blocks_total", "corvid_batch_size",
         "corvid_slot_traffic_weight", "corvid_slot_state"]


def scrape(url):
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, name, **labels):
    for s in fams[name].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()) and s.name in (name, name + "_total"):
            return s.value
    raise KeyError((name, labels))


def stream(addr, n, out, cancel_after=None):
    with grpc.insecure_channel(addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate",
                              request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        call = gen(pb.GenerateRequest(prompt="Once upon a time",
                                      sampling=pb.SamplingParams(max_tokens=n, ignore_eos=True)), timeout=60)
        got = 0
        try:
            for m in call:
                if m.WhichOneof("kind") == "chunk":
                    got += len(m.chunk.token_ids)
                    if cancel_after and got >= cancel_after:
                        call.cancel()
                        out.append("cancelled")
                        return
        except grpc.RpcError as e:
            out.append(e.code())
            return
        out.append("done")


def metrics_names_and_counts(srv, url):
    out = []
    for _ in range(3):
        stream(srv.addr, 20, out)
    assert out == ["done"] * 3, out
    fams = scrape(url)
    missing = [n for n in NAMES if n not in fams]
    assert not missing, missing
    ok = value(fams, "corvid_requests", version="stories260K", code="OK")
    assert ok >= 3, ok
    assert value(fams, "corvid_generated_tokens", version="stories260K") >= 60
    ttft = [s for s in fams["corvid_time_to_first_token_seconds"].samples if s.name.endswith("_count")]
    assert ttft and ttft[0].value >= 3
    itl = [s for s in fams["corvid_inter_token_latency_seconds"].samples if s.name.endswith("_count")]
    assert itl and itl[0].value >= 3 * 19, itl
    assert value(fams, "corvid_kv_blocks_total", version="stories260K") > 0
    assert value(fams, "corvid_slot_state", version="stories260K", state="ready") == 1
    assert value(fams, "corvid_slot_traffic_weight", version="stories260K") == 100


def cancel_returns_kv_blocks():
    # Gemma 3 270M decodes slowly enough on a CPU that the cancel lands mid-stream;
    # stories260K finishes its whole context in a few milliseconds.
    mport = free_port()
    url = "http://127.0.0.1:%d" % mport
    version = "gemma-3-270m-q4_k_m"
    srv = Server("--model", GEMMA, "--metrics-listen", "127.0.0.1:%d" % mport)
    try:
        out = []
        t = threading.Thread(target=stream, args=(srv.addr, 480, out, 10))
        t.start()
        t.join(60)
        assert out == ["cancelled"], out
        # The engine hands the blocks back before the RPC layer ends the call and counts
        # the request, so a scrape may see either first: wait for both.
        deadline = time.time() + 5
        while time.time() < deadline:
            fams = scrape(url)
            done = [s for s in fams["corvid_requests"].samples if s.labels.get("code") == "CANCELLED"]
            if value(fams, "corvid_kv_blocks_used", version=version) == 0 and \
                    value(fams, "corvid_running_sequences", version=version) == 0 and done:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("KV blocks still held or the request not counted after cancel")
        assert value(fams, "corvid_requests", version=version, code="CANCELLED") == 1
        gen = value(fams, "corvid_generated_tokens", version=version)
        assert 10 <= gen < 480, gen
    finally:
        srv.stop()


def request_log_lines(srv):
    with grpc.insecure_channel(srv.addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate",
                              request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        finals = [m.final for m in gen(pb.GenerateRequest(prompt="Once upon a time", request_id="trace-\"7\"",
                                                          sampling=pb.SamplingParams(max_tokens=3)), timeout=30)
                  if m.WhichOneof("kind") == "final"]
        minted = [m.final for m in gen(pb.GenerateRequest(prompt="Once upon a time",
                                                          sampling=pb.SamplingParams(max_tokens=3)), timeout=30)
                  if m.WhichOneof("kind") == "final"]
    assert finals[0].request_id == 'trace-"7"' and minted[0].request_id.startswith("req-"), (finals, minted)
    time.sleep(0.2)
    logs = [json.loads(line) for line in srv.output().splitlines() if line.startswith("{")]
    req = [e for e in logs if e.get("msg") == "request"]
    assert all(e["request_id"] for e in req), req
    ids = {e["request_id"] for e in req}
    assert 'trace-"7"' in ids and minted[0].request_id in ids, ids
    one = [e for e in req if e["request_id"] == 'trace-"7"'][0]
    assert one["code"] == "OK" and one["completion_tokens"] == 3 and one["version"] == "stories260K", one


def health_endpoints(url):
    with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
        assert r.status == 200 and r.read() == b"ready\n"
    try:
        urllib.request.urlopen(url + "/nope", timeout=5)
        raise AssertionError("404 expected")
    except urllib.error.HTTPError as e:
        assert e.code == 404


def not_ready_without_model():
    mport = free_port()
    srv = Server("--metrics-listen", "127.0.0.1:%d" % mport)
    try:
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/readyz" % mport, timeout=5)
            raise AssertionError("ready without a model")
        except urllib.error.HTTPError as e:
            assert e.code == 503
    finally:
        srv.stop()


def main():
    c = Checks()
    mport = free_port()
    url = "http://127.0.0.1:%d" % mport
    srv = Server("--model", MODEL, "--metrics-listen", "127.0.0.1:%d" % mport)
    try:
        c.run("metrics parse, names and counts", metrics_names_and_counts, srv, url)
        c.run("/healthz, /readyz, 404", health_endpoints, url)
        c.run("one JSON log line per request, with its id", request_log_lines, srv)
    finally:
        srv.stop()
    c.run("/readyz is 503 without a model", not_ready_without_model)
    if have_model(GEMMA, "cancel mid-stream (Gemma 3 270M)"):
        c.run("cancel mid-stream returns KV blocks (Gemma 3 270M)", cancel_returns_kv_blocks)
    c.finish()


main()
