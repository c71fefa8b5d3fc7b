"""The OpenAI-compatible HTTP API of a real corvid-server (--http-listen), from raw
sockets, http.client and curl: completions and chat, SSE framing, the same greedy tokens
as the gRPC stream and corvid-run, OpenAI error objects with their statuses, bad input
(malformed JSON, a 64 MB body refused before it is read, a wrong content type, invalid
UTF-8, NUL, a client that never reads), 256 open streams on a handful of threads,
disconnects that cancel, SIGTERM draining HTTP streams, the JWT policy (401 / 403 / 429
with Retry-After, audited) and TLS with the gRPC certificate. The official `openai` SDK
is tested in test_http_openai_sdk.py."""
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time

import grpc

from corvid_testlib import BIN, DATA, GEMMA, ROOT, TMP, Checks, Server, free_port, have_model, proto_modules

pb = proto_modules()[0]
MODEL = os.path.join(DATA, "models", "stories260K.gguf")
AUTH = os.path.join(ROOT, "tests", "data", "auth")
PROMPT = "Once upon a time"


class Api:
    """corvid-server with the HTTP API on a free port."""

    def __init__(self, *args, model=MODEL, tls=False):
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.srv = Server("--model", model, "--http-listen", "127.0.0.1:%d" % self.http_port,
                          "--metrics-listen", "127.0.0.1:%d" % self.metrics_port, *args)
        self.tls = tls

    def conn(self, timeout=60):
        if self.tls:
            ctx = ssl.create_default_context(cafile=os.path.join(TMP, "keys", "ca.pem"))
            return http.client.HTTPSConnection("127.0.0.1", self.http_port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers, parsed JSON body or raw text)."""
        c = self.conn(timeout)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            return r.status, dict(r.getheaders()), json.loads(raw)
        except ValueError:
            return r.status, dict(r.getheaders()), raw

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def stream(self, path, body, headers=None, on_first=None):
        """The SSE events of a streaming request: (status, [parsed data], saw [DONE]).
        on_first runs once the first event has arrived, while the stream is still open."""
        c = self.conn()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request("POST", path, body=json.dumps(dict(body, stream=True)), headers=h)
        r = c.getresponse()
        assert r.status == 200, (r.status, r.read())
        assert r.getheader("Content-Type") == "text/event-stream", r.getheader("Content-Type")
        events, done = [], False
        for line in r:
            line = line.decode().rstrip("\n")
            if not line:
                continue
            assert line.startswith("data: "), repr(line)
            if line == "data: [DONE]":
                done = True
            else:
                events.append(json.loads(line[6:]))
                if on_first and len(events) == 1:
                    on_first()
        c.close()
        return events, done

    def log(self):
        return self.srv.output()

    def stop(self):
        self.srv.stop()


def grpc_greedy(addr, prompt, n):
    with grpc.insecure_channel(addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        ids, text = [], ""
        for m in gen(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(max_tokens=n)), timeout=60):
            if m.WhichOneof("kind") == "chunk":
                ids += list(m.chunk.token_ids)
                text += m.chunk.text
        return ids, text


def corvid_run(prompt, n):
    r = subprocess.run([os.path.join(BIN, "corvid-run"), "-m", MODEL, "-p", prompt, "-n", str(n), "--temp", "0",
                        "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def request_line(api, rid, timeout=10):
    """The server's JSON log line of the request with X-Request-Id rid."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in api.log().splitlines():
            if '"request_id":"%s"' % rid in line:
                return json.loads(line)
        time.sleep(0.02)
    raise AssertionError("no log line for %s:\n%s" % (rid, api.log()[-2000:]))


# ---- checks on stories260K ----

def greedy_equals_grpc_and_corvid_run(api):
    n = 60
    events, done = api.stream("/v1/completions", {"prompt": PROMPT, "max_tokens": n, "temperature": 0,
                                                  "logprobs": 0, "stream_options": {"include_usage": True}})
    assert done
    text = "".join(c["text"] for e in events for c in e["choices"])
    pieces = [t for e in events for c in e["choices"] if c["logprobs"] for t in c["logprobs"]["tokens"]]
    usage = [e["usage"] for e in events if e.get("usage")]
    ids, gtext = grpc_greedy(api.srv.addr, PROMPT, n)
    ref = corvid_run(PROMPT, n)
    assert ids == ref["tokens"], (ids, ref["tokens"])
    assert text == gtext == ref["text"], (text, gtext, ref["text"])
    assert len(pieces) == len(ids) == usage[0]["completion_tokens"], (len(pieces), len(ids), usage)
    st, _, whole = api.post("/v1/completions", {"prompt": PROMPT, "max_tokens": n, "temperature": 0})
    assert st == 200 and whole["choices"][0]["text"] == text, whole
    assert whole["usage"]["completion_tokens"] == len(ids), whole["usage"]
    assert whole["model"] == "stories260K" and whole["object"] == "text_completion", whole


def sse_framing_with_curl(api):
    body = json.dumps({"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    r = subprocess.run(["curl", "-sS", "-N", "-i", "-H", "Content-Type: application/json", "-d", body,
                        "http://127.0.0.1:%d/v1/completions" % api.http_port], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    head, _, payload = r.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), head
    assert "Content-Type: text/event-stream" in head and "Transfer-Encoding: chunked" in head, head
    blocks = payload.split("\n\n")
    assert blocks[-1] == "" and blocks[-2] == "data: [DONE]", blocks[-3:]
    objs = [json.loads(b[6:]) for b in blocks[:-2]]
    assert all(b.startswith("data: {") for b in blocks[:-2]), blocks
    assert all(o["object"] == "text_completion" and o["id"] == objs[0]["id"] for o in objs), objs
    assert objs[-2]["choices"][0]["finish_reason"] == "length", objs[-2]
    assert objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] == 8, objs[-1]


def errors_are_openai_objects(api):
    def err(status, body, param=None, needle=None, path="/v1/completions", headers=None):
        st, h, b = api.post(path, body, headers=headers)
        assert st == status, (st, b)
        e = b["error"]
        assert set(e) == {"message", "type", "param", "code"}, e
        assert e["param"] == param, e
        if needle:
            assert needle in e["message"], e
        return h, e
    err(400, b'{"prompt": "x",', None, "malformed JSON at byte")
    err(400, {"prompt": "x", "temperature": "hot"}, "temperature", "temperature: expected a number, got string")
    err(400, {"prompt": "x", "max_tokens": 0}, "max_tokens", "outside [1,")
    err(400, {"prompt": "x", "n": 2}, "n", "only 1 choice")
    err(400, {"prompt": ["a", "b"]}, "prompt", "only one prompt")
    err(400, {"prompt": "a\u0000b"}, "prompt", "prompt: NUL (U+0000) at byte 1 is not accepted in text")
    err(400, b'{"prompt": "caf\xe9"}', None, "not valid UTF-8 at byte 15")
    err(400, {"prompt": "x", "stop": ["a", 1]}, "stop[1]", "expected a string")
    err(400, {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "not a role",
        path="/v1/chat/completions")
    err(400, {"messages": [{"content": "x"}]}, "messages[0].role", "messages[0].role: required",
        path="/v1/chat/completions")
    err(400, {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text",
        "required", path="/v1/chat/completions")
    err(400, {"prompt": "word " * 400}, "prompt", "context")
    err(400, {"prompt": "x" * 5000}, "prompt", "prompt: 5000 bytes is over max_prompt_bytes (4096")
    h, e = err(404, {"model": "gpt-4", "prompt": "x"}, "model", "not served here")
    assert e["code"] == "model_not_found" and e["type"] == "not_found_error", e
    st, _, b = api.post("/v1/completions", "{}", headers={"Content-Type": "text/plain"})
    assert st == 415 and "application/json" in b["error"]["message"], b
    # Unknown fields are ignored; application/json with a charset is fine.
    st, _, b = api.post("/v1/completions", {"prompt": "x", "max_tokens": 1, "frobnicate": [1]},
                        headers={"Content-Type": "application/json; charset=utf-8"})
    assert st == 200, b
    st, _, b = api.request("GET", "/v1/nothing")
    assert st == 404 and b["error"]["type"] == "not_found_error", b
    st, _, b = api.request("DELETE", "/v1/models")
    assert st == 405, b
    # Chat on a model without a chat template: 400 naming messages.
    st, _, b = api.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert st == 400 and "chat template" in b["error"]["message"], b


def big_body_refused_before_read(api):
    """Headers announcing 64 MB: the 413 arrives without a byte of the body sent."""
    s = socket.create_connection(("127.0.0.1", api.http_port), timeout=10)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 67108864\r\n\r\n")
    head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413"), head
    s.close()
    # A chunked body that grows past the limit is cut off.
    s = socket.create_connection(("127.0.0.1", api.http_port), timeout=10)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    sent = 0
    try:
        for _ in range(64):
            s.sendall(chunk)
            sent += 1
    except OSError:
        pass
    s.close()
    assert sent < 64, "64 MiB chunked body accepted"
    st, _, b = api.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 2})
    assert st == 200, b


def slow_clients_do_not_stall_others(api):
    """A client that never reads its stream, and one that stalls mid-body: others are served."""
    never = socket.create_connection(("127.0.0.1", api.http_port), timeout=10)
    never.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = json.dumps({"prompt": PROMPT, "max_tokens": 120, "stream": True, "logprobs": 20}).encode()
    never.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-Request-Id: never-reads\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    stall = socket.create_connection(("127.0.0.1", api.http_port), timeout=10)
    stall.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"prompt\":")
    t0 = time.time()
    for _ in range(5):
        st, _, b = api.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 16, "temperature": 0})
        assert st == 200, b
    assert time.time() - t0 < 20, time.time() - t0
    line = request_line(api, "never-reads")
    assert line["code"] == "OK", line
    never.close()
    stall.close()


def open_streams_without_a_thread_each(api):
    """256 streaming requests open at once: all answered in full; the server's thread
    count stays that of an idle server plus a few (no thread per stream)."""
    pid = api.srv.proc.pid
    idle = len(os.listdir("/proc/%d/task" % pid))
    body = json.dumps({"prompt": PROMPT, "max_tokens": 24, "stream": True}).encode()
    socks = []
    for i in range(256):
        s = socket.create_connection(("127.0.0.1", api.http_port), timeout=60)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        socks.append(s)
    peak = len(os.listdir("/proc/%d/task" % pid))
    done = 0
    for s in socks:
        data = b""
        while not data.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"):
            part = s.recv(65536)
            if not part:
                break
            data += part
            peak = max(peak, len(os.listdir("/proc/%d/task" % pid)))
            if not data.startswith(b"HTTP/1.1 200") and b"}}" in data:
                break  # an error object: counted as not done
        done += data.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in data
        s.close()
    assert done == 256, done
    assert peak <= idle + 2, (idle, peak)
    print("256 streams: %d server threads idle, %d at most while open" % (idle, peak))


def models_and_routing(api):
    st, _, b = api.request("GET", "/v1/models")
    assert st == 200 and b["object"] == "list", b
    ids = {m["id"]: m for m in b["data"]}
    assert "stories260K" in ids and ids["stories260K"]["corvid"]["kind"] == "version", ids
    name = ids["stories260K"]["corvid"]["model"]
    assert ids[name]["corvid"]["kind"] == "model", ids
    st, _, m = api.request("GET", "/v1/models/stories260K")
    assert st == 200 and m["id"] == "stories260K" and m["object"] == "model", m
    st, _, m = api.request("GET", "/v1/models/nope")
    assert st == 404 and m["error"]["code"] == "model_not_found", m
    for model in ("stories260K", name):
        st, _, r = api.post("/v1/completions", {"model": model, "prompt": PROMPT, "max_tokens": 2})
        assert st == 200 and r["model"] == "stories260K", r


def metrics_and_logs_carry_the_protocol(api):
    grpc_greedy(api.srv.addr, PROMPT, 3)
    st, _, b = api.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 3}, headers={"X-Request-Id": "metered"})
    assert st == 200, b
    line = request_line(api, "metered")
    assert line["protocol"] == "http" and line["code"] == "OK" and line["completion_tokens"] == 3, line
    c = http.client.HTTPConnection("127.0.0.1", api.metrics_port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()

    def value(series):
        m = re.search("^" + re.escape(series) + r" (\S+)$", text, re.M)
        assert m, (series, text[:3000])
        return float(m.group(1))
    http_ok = value('corvid_requests_total{version="stories260K",protocol="http",code="OK"}')
    grpc_ok = value('corvid_requests_total{version="stories260K",protocol="grpc",code="OK"}')
    assert http_ok >= 10 and grpc_ok >= 2, (http_ok, grpc_ok)
    assert value('corvid_generated_tokens_total{version="stories260K",protocol="http"}') > 0
    assert value('corvid_time_to_first_token_seconds_count{version="stories260K",protocol="http"}') >= 10
    assert value('corvid_http_requests_total{endpoint="/v1/completions",status="200"}') >= 10
    assert value('corvid_http_requests_total{endpoint="/v1/completions",status="400"}') >= 5
    assert value('corvid_http_requests_total{endpoint="/v1/models/{id}",status="404"}') >= 1
    assert value('corvid_http_requests_total{endpoint="other",status="404"}') >= 1
    assert value('corvid_http_requests_total{endpoint="/v1/completions",status="415"}') >= 1


def bench_load_http_mode(api):
    r = subprocess.run([os.path.join(BIN, "bench-load"), "--addr", "127.0.0.1:%d" % api.http_port, "--http",
                        "--concurrency", "4", "--requests", "12", "--max-tokens", "16", "--ignore-eos"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    o = json.loads(r.stdout)
    assert o["protocol"] == "http" and o["requests_ok"] == 12 and o["by_status"] == {"200": 12}, o
    assert o["output_tokens"] == 12 * 16 and o["ttft_ms_p50"] > 0 and o["output_tokens_per_s"] > 0, o


def rag_over_http(api):
    """corvid.rag as gRPC's RagOptions: citations in the whole answer and as the first SSE
    event (a chunk without choices), the default answer when nothing is found, a bad option
    named."""
    rag = {"corvid": {"rag": {"top_k": 2}}}
    st, _, b = api.post("/v1/completions", dict(prompt="What is the corvid mascot?", max_tokens=4, **rag))
    assert st == 200, b
    c = b["citations"]
    assert c[0]["document_id"] == "mascot" and c[0]["source"] == "kb:docs" and c[0]["index"] == 1, c
    assert b["usage"]["prompt_tokens"] > 20, b["usage"]  # the passage went into the prompt
    events, done = api.stream("/v1/completions", dict(prompt="What is the corvid mascot?", max_tokens=4, **rag))
    assert done and events[0]["choices"] == [] and events[0]["citations"] == c, events[0]
    st, _, b = api.post("/v1/completions", dict(prompt="zebra quantum saxophone?", max_tokens=4, **rag))
    assert st == 200 and b["choices"][0]["text"] == "No relevant data found." and "citations" not in b, b
    assert b["usage"]["completion_tokens"] == 0, b
    events, done = api.stream("/v1/completions", dict(prompt="zebra quantum saxophone?", max_tokens=4, **rag))
    assert done and "".join(c["text"] for e in events for c in e["choices"]) == "No relevant data found.", events
    st, _, b = api.post("/v1/completions", {"prompt": "x", "corvid": {"rag": {"top_k": 99}}})
    assert st == 400 and b["error"]["param"] == "corvid.rag.top_k", b
    st, _, b = api.post("/v1/completions", {"prompt": "x", "corvid": {"rag": {"knowledge_base": "nope"}}})
    assert st == 400 and "nope" in b["error"]["message"], b


# ---- Gemma: long generations for disconnects and drain ----

def disconnect_cancels(api):
    body = json.dumps({"prompt": PROMPT, "max_tokens": 3000, "temperature": 0, "stream": True,
                       "corvid": {"ignore_eos": True}}).encode()
    s = socket.create_connection(("127.0.0.1", api.http_port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Request-Id: gone-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    got, seen = b"", []
    while got.count(b"data: ") < 4:
        got += s.recv(4096)
        seen.append(time.time())
    s.close()
    # "Within one engine step": the bound is a few of this host's steps (an ASan build on
    # a loaded host takes seconds per token), never less than 2 s.
    bound = max(2.0, 4 * (seen[-1] - seen[0]) / max(1, len(seen) - 1))
    line = request_line(api, "gone-stream")
    assert line["code"] == "CANCELLED" and line["completion_tokens"] < 100, line
    # Without stream: the hang-up watcher sees the close while the answer is pending.
    body = json.dumps({"prompt": PROMPT, "max_tokens": 3000, "corvid": {"ignore_eos": True}}).encode()
    s = socket.create_connection(("127.0.0.1", api.http_port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Request-Id: gone-whole\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    time.sleep(0.5)
    t0 = time.time()
    s.close()
    line = request_line(api, "gone-whole")
    assert line["code"] == "CANCELLED" and line["completion_tokens"] < 1000, line
    assert time.time() - t0 < bound, (time.time() - t0, bound)
    st, _, b = api.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 4})
    assert st == 200, b


def sigterm_drains_http_streams(api):
    # SIGTERM goes out once the stream has started, not after a fixed sleep: on a quick
    # host a short stream ends before the signal and there is nothing left to drain.
    refused = {}

    def terminate_and_try():
        api.srv.terminate()
        time.sleep(0.1)
        refused["reply"] = api.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 2})
    events, done = api.stream("/v1/completions", {
        "prompt": PROMPT, "max_tokens": 120, "temperature": 0, "corvid": {"ignore_eos": True},
        "stream_options": {"include_usage": True}}, on_first=terminate_and_try)
    st, h, b = refused["reply"]
    assert st == 503 and b["error"]["type"] == "service_unavailable_error", (st, b)
    assert done, events[-1]
    assert events[-1]["usage"]["completion_tokens"] == 120, events[-1]
    assert api.srv.wait(30) == 0


# ---- auth and TLS ----

def mint(key, claims):
    r = subprocess.run([sys.executable, os.path.join(AUTH, "mint_jwt.py"), "--alg", "HS256", "--key",
                        os.path.join(TMP, "keys", key), "--kid", "hs", "--ttl", "300", json.dumps(claims)],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def auth_policy_applies(api):
    def tok(scope):
        return mint("jwt-hs256.secret", {"sub": "alice", "iss": "https://idp.test", "aud": "corvid", "scope": scope})
    body = {"prompt": PROMPT, "max_tokens": 2}
    st, _, b = api.post("/v1/completions", body)
    assert st == 401 and b["error"]["type"] == "authentication_error", b
    st, _, b = api.post("/v1/completions", body, headers={"Authorization": "Bearer not.a.jwt"})
    assert st == 401, b
    st, _, b = api.post("/v1/completions", body, headers={"Authorization": "Bearer " + tok("admin")})
    assert st == 403 and "needs scope inference" in b["error"]["message"], b
    good = {"Authorization": "Bearer " + tok("inference")}
    st, _, b = api.request("GET", "/v1/models", headers=good)
    assert st == 200, b
    seen = []
    for _ in range(6):
        st, h, b = api.post("/v1/completions", body, headers=good)
        seen.append(st)
        if st == 429:
            assert int(h["Retry-After"]) >= 1 and b["error"]["type"] == "rate_limit_error", (h, b)
            break
    assert seen[0] == 200 and seen[-1] == 429, seen
    # Auth failures are tallied and written at shutdown (audit.h).
    api.srv.terminate()
    assert api.srv.wait(30) == 0
    with open(os.path.join(TMP, "http-audit.jsonl")) as f:
        audit = [json.loads(l) for l in f]
    fails = [a for a in audit if a["event"] == "auth_failure" and a["method"] == "/v1/completions"]
    assert sum(a.get("count", 1) for a in fails) >= 3, audit
    assert not any("eyJ" in json.dumps(a) for a in audit), audit


def tls_with_grpc_files(api):
    st, _, b = api.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 3})
    assert st == 200 and b["usage"]["completion_tokens"] == 3, b
    plain = http.client.HTTPConnection("127.0.0.1", api.http_port, timeout=10)
    try:
        plain.request("GET", "/v1/models")
        r = plain.getresponse()
        assert r.status != 200, r.status
    except (OSError, http.client.HTTPException):
        pass


def https_get(port, cafile, cert=None, key=None):
    """(status, JSON body) of GET /v1/models over HTTPS trusting cafile, with an optional
    client certificate."""
    ctx = ssl.create_default_context(cafile=cafile)
    if cert:
        ctx.load_cert_chain(cert, key)
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    try:
        c.request("GET", "/v1/models")
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def tls_files_reloaded():
    """New certificate files on disk are served by the next handshake; a half-rotated set
    (new key, old certificate) keeps the old pair serving."""
    keys, live = os.path.join(TMP, "keys"), os.path.join(TMP, "http-live")
    os.makedirs(live, exist_ok=True)
    for n in ("server.pem", "server.key"):
        shutil.copy(os.path.join(keys, n), os.path.join(live, n))
    api = Api("--tls-cert", os.path.join(live, "server.pem"), "--tls-key", os.path.join(live, "server.key"),
              tls=True)
    try:
        assert https_get(api.http_port, os.path.join(keys, "ca.pem"))[0] == 200
        keys2 = os.path.join(TMP, "keys2-http")
        subprocess.run(["sh", os.path.join(AUTH, "gen.sh"), keys2], check=True, capture_output=True)
        os.replace(shutil.copy(os.path.join(keys2, "server.key"), os.path.join(live, "k.tmp")),
                   os.path.join(live, "server.key"))
        time.sleep(1.2)
        assert https_get(api.http_port, os.path.join(keys, "ca.pem"))[0] == 200
        assert "not usable" in api.log(), api.log()[-2000:]
        os.replace(shutil.copy(os.path.join(keys2, "server.pem"), os.path.join(live, "c.tmp")),
                   os.path.join(live, "server.pem"))
        deadline = time.time() + 10
        while True:
            try:
                assert https_get(api.http_port, os.path.join(keys2, "ca.pem"))[0] == 200
                break
            except ssl.SSLError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        try:
            https_get(api.http_port, os.path.join(keys, "ca.pem"))
            raise AssertionError("the old CA still verifies the rotated server")
        except ssl.SSLError:
            pass
    finally:
        api.stop()


def mtls_on_http():
    k = os.path.join(TMP, "keys")
    api = Api("--tls-cert", k + "/server.pem", "--tls-key", k + "/server.key", "--tls-client-ca", k + "/ca.pem",
              tls=True)
    try:
        st, b = https_get(api.http_port, k + "/ca.pem", k + "/client.pem", k + "/client.key")
        assert st == 200 and b["data"], b
        st, b = https_get(api.http_port, k + "/ca.pem")
        assert st == 401 and "requires a client certificate" in b["error"]["message"], (st, b)
        st, b = https_get(api.http_port, k + "/ca.pem", k + "/other-client.pem", k + "/other-client.key")
        assert st == 401 and b["error"]["code"] == "invalid_client_certificate", (st, b)
        # The server's own certificate is signed by the CA but is not for client use.
        st, b = https_get(api.http_port, k + "/ca.pem", k + "/server.pem", k + "/server.key")
        assert st == 401, (st, b)
    finally:
        api.stop()


def config_refusals():
    def refused(*args):
        r = subprocess.run([os.path.join(BIN, "corvid-server"), "--check-config"] + list(args),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0, r.stdout
        return r.stderr
    assert "http_listen" in refused("--http-listen", "localhost")
    assert "http_listen" in refused("--http-listen", "127.0.0.1:1", "--listen", "127.0.0.1:1")


def main():
    c = Checks()
    subprocess.run(["sh", os.path.join(AUTH, "gen.sh"), os.path.join(TMP, "keys")], check=True, capture_output=True)
    kb_src = os.path.join(TMP, "kb.jsonl")
    with open(kb_src, "w") as f:
        for d in [{"id": "mascot", "title": "Project mascot",
                   "text": "The corvid project's mascot is a raven named Quill. Quill appears on every poster."},
                  {"id": "kv", "title": "KV cache", "text": "The paged KV cache holds sixteen positions a block."},
                  {"id": "swap", "title": "Hot swap", "text": "Traffic moves between model versions by weight."},
                  {"id": "auth", "title": "Tokens", "text": "Clients send a bearer token signed by the issuer."}]:
            f.write(json.dumps(d) + "\n")
    kb = os.path.join(TMP, "kb.cvidx")
    subprocess.run([os.path.join(BIN, "corvid-index"), "build", kb_src, "-o", kb], check=True, capture_output=True)
    api = Api("--max-running", "64", "--max-waiting", "256", "--request-queue", "512", "--rag-kb", "docs=" + kb)
    try:
        c.run("greedy HTTP stream equals the gRPC stream and corvid-run", greedy_equals_grpc_and_corvid_run, api)
        c.run("curl -N: SSE framing, [DONE], usage chunk", sse_framing_with_curl, api)
        c.run("errors: OpenAI objects, statuses, param names the field", errors_are_openai_objects, api)
        c.run("64 MB body refused before it is read; chunked cut off", big_body_refused_before_read, api)
        c.run("a client that never reads and one that stalls do not stall others",
              slow_clients_do_not_stall_others, api)
        c.run("256 open streams without a thread per stream", open_streams_without_a_thread_each, api)
        c.run("/v1/models; model names a version or the model", models_and_routing, api)
        c.run("bench-load --http: same JSON, every request ok", bench_load_http_mode, api)
        c.run("RAG over HTTP: citations, first SSE event, default answer", rag_over_http, api)
        c.run("metrics: protocol label, HTTP requests by endpoint and status; log line",
              metrics_and_logs_carry_the_protocol, api)
    finally:
        api.stop()
    if have_model(GEMMA, "HTTP disconnect and drain on Gemma 3 270M"):
        api = Api("--ctx", "4096", "--drain-timeout", "120", model=GEMMA)
        try:
            c.run("a disconnect cancels the sequence (stream and whole)", disconnect_cancels, api)
            c.run("SIGTERM drains HTTP streams; new requests get 503", sigterm_drains_http_streams, api)
        finally:
            api.stop()
    policy = os.path.join(TMP, "http-auth.json")
    with open(policy, "w") as f:
        json.dump({"jwt": {"keys": [{"kid": "hs", "alg": "HS256",
                                     "secret_file": os.path.join(TMP, "keys", "jwt-hs256.secret")}],
                           "issuer": "https://idp.test", "audience": "corvid"},
                   "rate_limit": {"per_second": 0.2, "burst": 3},
                   "audit_log": os.path.join(TMP, "http-audit.jsonl")}, f)
    api = Api("--auth-config", policy)
    try:
        c.run("JWT policy: 401, 403, 429 with Retry-After, audited", auth_policy_applies, api)
    finally:
        api.stop()
    k = os.path.join(TMP, "keys")
    api = Api("--tls-cert", k + "/server.pem", "--tls-key", k + "/server.key", tls=True)
    try:
        c.run("HTTPS with the gRPC certificate files", tls_with_grpc_files, api)
    finally:
        api.stop()
    c.run("HTTPS: rotated certificate files served without a restart", tls_files_reloaded)
    c.run("mTLS: no, foreign or server-only client certificate gets 401", mtls_on_http)
    c.run("config: bad http_listen, same port", config_refusals)
    c.finish()


if __name__ == "__main__":
    main()
