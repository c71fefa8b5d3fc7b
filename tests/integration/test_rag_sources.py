"""Live RAG sources against real local HTTP servers (127.0.0.1): a good source, a slow
one, one answering 500, one sending garbage, one sending a huge body, one with no
usable result, one refusing connections. Checks results, the time budget, concurrency,
PII masking of outbound URLs, and one audit line per request with the right outcome.
Drives `corvid-index sources`. Prints "N passed, N failed"."""
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, summary  # noqa: E402

BIN = os.path.join(os.environ["CORVID_BIN"], "corvid-index")
received = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send_json(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query).get("q", [""])[0]
        received.append((url.path, q, self.headers.get("X-Api-Key")))
        try:
            if url.path == "/ok":
                self.send_json({"results": [
                    {"snippet": f"answer {i} for {q}", "name": f"doc {i}", "link": f"http://x/{i}"}
                    for i in range(8)]})
            elif url.path.startswith("/delay"):
                time.sleep(int(url.path[len("/delay"):]) / 1000)
                self.send_json({"snippet": "late but fine"})
            elif url.path == "/err":
                self.send_json({"error": "boom"}, 500)
            elif url.path == "/garbage":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"\x00<html>not json at all{{{")
            elif url.path == "/huge":
                self.send_response(200)
                self.end_headers()
                chunk = b"[" + b"1," * 32768
                for _ in range(160):  # about 10 MB, no Content-Length
                    self.wfile.write(chunk)
            elif url.path == "/empty":
                self.send_json({"results": [{"other": 1}]})
            else:
                self.send_json({}, 404)
        except (BrokenPipeError, ConnectionResetError):
            pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_sources(tmp, config, question, *extra):
    cfg = os.path.join(tmp, "sources.json")
    audit = os.path.join(tmp, "audit.jsonl")
    if os.path.exists(audit):
        os.unlink(audit)
    with open(cfg, "w") as f:
        json.dump(config, f)
    t = time.monotonic()
    p = subprocess.run([BIN, "sources", cfg, question, "--audit", audit, *extra],
                       capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t
    lines = []
    if os.path.exists(audit):
        lines = [json.loads(l) for l in open(audit)]
    out = json.loads(p.stdout) if p.returncode == 0 else None
    return p.returncode, out, {a["source"]: a for a in lines}, len(lines), elapsed, p.stderr


def src(name, base, path, **kw):
    s = {"name": name, "url": f"{base}{path}?q={{query}}", "text": "/snippet",
         "title": "/name", "link": "/link"}
    s.update(kw)
    return s


def main():
    seed = random.randrange(1 << 30)
    random.seed(seed)
    print(f"seed {seed}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    tmp = tempfile.mkdtemp(prefix="corvid-sources-")

    phone = "1" + str(random.randint(3, 9)) + "".join(random.choice("0123456789") for _ in range(9))
    question = f"退货政策 refund call {phone} now"
    config = {"budget_ms": 700, "sources": [
        src("good", base, "/ok", items="/results", max_results=3, headers={"X-Api-Key": "secret-key"}),
        src("slow", base, "/delay3000", timeout_ms=300),
        src("err", base, "/err", items="/results"),
        src("garbage", base, "/garbage"),
        src("huge", base, "/huge", max_bytes=65536),
        src("empty", base, "/empty", items="/results"),
        src("refused", f"http://127.0.0.1:{free_port()}", "/ok"),
    ]}
    rc, out, audit, n_audit, elapsed, err = run_sources(tmp, config, question)
    check("exit 0 despite failing sources", rc == 0, err)
    res = (out or {}).get("results", [])
    check("only the good source answers, max_results applied",
          len(res) == 3 and all(r["source"] == "good" for r in res), res)
    check("result fields", res and res[0]["title"] == "doc 0" and res[0]["url"] == "http://x/0"
          and res[0]["text"].startswith("answer 0 for "), res[:1])
    check("one audit line per request", n_audit == 7 and set(audit) == {s["name"] for s in config["sources"]},
          audit)
    want = {"good": "ok", "slow": "timeout", "err": "http_status", "garbage": "bad_body",
            "huge": "too_large", "empty": "bad_body", "refused": "error"}
    for name, outcome in want.items():
        a = audit.get(name, {})
        check(f"audit {name} outcome", a.get("outcome") == outcome, a)
    check("audit status codes", audit.get("good", {}).get("status") == 200
          and audit.get("err", {}).get("status") == 500, audit)
    check("audit bytes and results", audit["good"]["bytes"] > 0 and audit["good"]["results"] == 3
          and audit["huge"]["bytes"] <= 65536, audit)
    check("slow source cut at its own timeout", 250 <= audit["slow"]["latency_ms"] < 700, audit["slow"])
    check("whole fetch within the budget", elapsed < 1.5, elapsed)

    # PII: the number never leaves the process, in the request or in the audit line
    got = [r for r in received if r[0] == "/ok"]
    check("server got the masked query", got and got[-1][1] == "退货政策 refund call [PHONE] now", got[-1:])
    check("headers sent", got and got[-1][2] == "secret-key", got[-1:])
    text = open(os.path.join(tmp, "audit.jsonl")).read()
    check("audit has no PII and no header secrets", phone not in text and "secret-key" not in text
          and "%5BPHONE%5D" in text, text[:300])

    # one overall budget: sources with long timeouts are cut by the budget
    config = {"budget_ms": 300, "sources": [src("a", base, "/delay2000", timeout_ms=5000),
                                            src("b", base, "/delay2000", timeout_ms=5000)]}
    rc, out, audit, n_audit, elapsed, err = run_sources(tmp, config, "q")
    check("budget exhausted outcome", rc == 0 and all(audit.get(k, {}).get("outcome") == "budget" for k in "ab"),
          audit)
    check("budget respected", elapsed < 1.2, elapsed)
    rc, out, audit, n_audit, elapsed, err = run_sources(tmp, config, "q", "--budget-ms", "100")
    check("budget override", rc == 0 and audit["a"]["latency_ms"] < 300, audit)

    # concurrency: three 300 ms sources finish in well under 900 ms
    config = {"budget_ms": 2000, "sources": [src(f"c{i}", base, "/delay300") for i in range(3)]}
    rc, out, audit, n_audit, elapsed, err = run_sources(tmp, config, "q")
    check("concurrent fetch", rc == 0 and len(out["results"]) == 3
          and max(a["latency_ms"] for a in audit.values()) < 850, audit)

    # config errors are clear and fatal (to the config load, not to a request)
    bad = [({"sources": [src("x", base, "/ok", colour="red")]}, "unknown key \"colour\""),
           ({"sources": [{"name": "x", "url": f"{base}/ok", "text": "/t"}]}, "{query}"),
           ({"sources": [src("x", base, "/ok", headers={"A": "b\r\nX: y"})]}, "CR, LF"),
           ({"sources": [src("x", base, "/ok", text="snippet")]}, "JSON pointer"),
           ({"budget_ms": 0, "sources": []}, "budget_ms"),
           ({"sources": [src("x", base, "/ok"), src("x", base, "/ok")]}, "used twice")]
    for cfg, msg in bad:
        rc, out, audit, n_audit, elapsed, err = run_sources(tmp, cfg, "q")
        check(f"bad config: {msg}", rc == 1 and msg in err and n_audit == 0, err)

    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    server.shutdown()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
