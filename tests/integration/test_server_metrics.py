"""corvid-server's /metrics, /healthz and /readyz, parsed with prometheus_client's text
parser (an independent implementation of the exposition format). A stream cancelled
mid-way must hand its KV blocks back, visibly in corvid_kv_blocks_used. The figures the
chart's autoscaler and alerts read (KV cache usage, queue time, prompt tokens, finish
reasons) follow real requests; SIGUSR1 (the chart's preStop) turns readiness off while
calls are still served."""
import json
import os
import signal
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
         "corvid_slot_traffic_weight", "corvid_slot_state", "corvid_kv_cache_usage_ratio", "corvid_queue_time_seconds",
         "corvid_prompt_tokens", "corvid_finish_reasons"]


def scrape(url):
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, name, **labels):
    for s in fams[name].samples:
        if all(s.labels.get(k) == v for k, v in labels.items()) and s.name in (name, name + "_total"):
            return s.value
    raise KeyError((name, labels))


def generate(addr, **sampling):
    """One Generate call to its end: the final message."""
    with grpc.insecure_channel(addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate",
                              request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        return [m.final for m in gen(pb.GenerateRequest(prompt="Once upon a time there was a bird",
                                                        sampling=pb.SamplingParams(**sampling)), timeout=60)
                if m.WhichOneof("kind") == "final"][0]


def sum_of(fams, sample, **labels):
    """The sum of the samples named `sample` (a family's _total, _count, ... series)."""
    return sum(s.value for f in fams.values() for s in f.samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def autoscaler_figures(srv, url):
    """Finish reasons, prompt tokens and queue time move with real requests (deltas
    of two scrapes); KV usage is blocks used over blocks in all, 0-1."""
    before = scrape(url)
    finals = [generate(srv.addr, max_tokens=5, ignore_eos=True) for _ in range(2)]
    finals.append(generate(srv.addr, max_tokens=200, stop=["."]))
    after = scrape(url)
    reasons = {}
    for f in finals:
        r = pb.FinishReason.Name(f.finish_reason).replace("FINISH_REASON_", "").lower()
        reasons[r] = reasons.get(r, 0) + 1
    assert reasons.get("length", 0) >= 2, reasons
    for r in ("stop", "length", "tool_calls", "cancelled", "error", "refused"):
        d = sum_of(after, "corvid_finish_reasons_total", reason=r) - sum_of(before, "corvid_finish_reasons_total",
                                                                              reason=r)
        assert d == reasons.get(r, 0), (r, d, reasons)
    prompt = sum(f.usage.prompt_tokens for f in finals)
    assert prompt >= 3 * 8, [f.usage for f in finals]
    got = sum_of(after, "corvid_prompt_tokens_total") - sum_of(before, "corvid_prompt_tokens_total")
    assert got == prompt, (got, prompt)
    q = sum_of(after, "corvid_queue_time_seconds_count") - sum_of(before, "corvid_queue_time_seconds_count")
    assert q == 3, q
    inf = [s for s in after["corvid_queue_time_seconds"].samples if s.labels.get("le") == "+Inf"
           and s.labels["protocol"] == "grpc"][0]
    # Nothing else runs: each was scheduled at once, well under a second.
    under_1s = [s for s in after["corvid_queue_time_seconds"].samples if s.labels.get("le") == "1"
                and s.labels["protocol"] == "grpc"][0]
    assert under_1s.value == inf.value, (under_1s, inf)
    used = value(after, "corvid_kv_blocks_used", version="stories260K")
    total = value(after, "corvid_kv_blocks_total", version="stories260K")
    ratio = value(after, "corvid_kv_cache_usage_ratio", version="stories260K")
    assert 0 <= ratio <= 1 and abs(ratio - used / total) < 1e-6, (ratio, used, total)


def held_kv_ratio():
    """While streams hold KV blocks the ratio is above 0; it is 0 again once they end."""
    mport = free_port()
    url = "http://127.0.0.1:%d" % mport
    srv = Server("--model", MODEL, "--metrics-listen", "127.0.0.1:%d" % mport, "--kv-memory-mb", "1",
                 "--max-running", "2")
    try:
        done = []
        threads = [threading.Thread(target=lambda: done.append(generate(srv.addr, max_tokens=400, ignore_eos=True)))
                   for _ in range(6)]
        for t in threads:
            t.start()
        seen = []
        while any(t.is_alive() for t in threads):
            seen.append(value(scrape(url), "corvid_kv_cache_usage_ratio", version="stories260K"))
        for t in threads:
            t.join()
        assert len(done) == 6 and max(seen) > 0, (len(done), seen[:20])
        deadline = time.time() + 5
        while value(scrape(url), "corvid_kv_cache_usage_ratio", version="stories260K") != 0:
            assert time.time() < deadline, "blocks still held 5 s after the streams ended"
            time.sleep(0.05)
        print("  KV usage ratio while 2 of 6 streams ran: up to %.4f (%d scrapes)" % (max(seen), len(seen)))
    finally:
        srv.stop()


def unready_on_sigusr1():
    """SIGUSR1: /readyz 503 and Inference NOT_SERVING at once, calls still answered; then
    SIGTERM drains and the process exits 0."""
    _, _, health_pb2 = proto_modules()
    mport = free_port()
    url = "http://127.0.0.1:%d" % mport
    srv = Server("--model", MODEL, "--metrics-listen", "127.0.0.1:%d" % mport)
    try:
        with grpc.insecure_channel(srv.addr) as ch:
            check = ch.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                   response_deserializer=health_pb2.HealthCheckResponse.FromString)

            def status(svc):
                return check(health_pb2.HealthCheckRequest(service=svc), timeout=5).status
            assert status("corvid.v1.Inference") == health_pb2.HealthCheckResponse.SERVING
            srv.proc.send_signal(signal.SIGUSR1)
            deadline = time.time() + 5
            while status("corvid.v1.Inference") != health_pb2.HealthCheckResponse.NOT_SERVING:
                assert time.time() < deadline, "still SERVING 5 s after SIGUSR1"
                time.sleep(0.05)
            try:
                urllib.request.urlopen(url + "/readyz", timeout=5)
                raise AssertionError("ready after SIGUSR1")
            except urllib.error.HTTPError as e:
                assert e.code == 503
            # Live, and still serving the calls that reach it.
            assert status("") == health_pb2.HealthCheckResponse.SERVING
            f = generate(srv.addr, max_tokens=4, ignore_eos=True)
            assert f.usage.completion_tokens == 4, f
        assert "not ready (SIGUSR1)" in srv.output(), srv.output()
        srv.terminate()
        assert srv.wait(30) == 0, srv.output()
    finally:
        srv.stop()


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
        c.run("finish reasons, prompt tokens, queue time, KV usage ratio", autoscaler_figures, srv, url)
        c.run("one JSON log line per request, with its id", request_log_lines, srv)
    finally:
        srv.stop()
    c.run("/readyz is 503 without a model", not_ready_without_model)
    c.run("KV usage ratio rises while a stream holds blocks", held_kv_ratio)
    c.run("SIGUSR1 turns readiness off, calls still served; SIGTERM exits 0", unready_on_sigusr1)
    if have_model(GEMMA, "cancel mid-stream (Gemma 3 270M)"):
        c.run("cancel mid-stream returns KV blocks (Gemma 3 270M)", cancel_returns_kv_blocks)
    c.finish()


main()
