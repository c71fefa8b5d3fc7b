"""A minimal OTLP/HTTP JSON receiver for tests that run under /usr/bin/python3 (no
opentelemetry-proto there: test_tracing.py decodes with the official package). Keeps
every span as its JSON object (ids hex, as OTLP/JSON has them) with "service" added
from the resource's service.name."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.spans = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                got = []
                for rs in doc.get("resourceSpans", []):
                    res = {a["key"]: a["value"].get("stringValue") for a in rs["resource"]["attributes"]}
                    for ss in rs.get("scopeSpans", []):
                        for sp in ss.get("spans", []):
                            sp["service"] = res.get("service.name")
                            sp["attrs"] = {a["key"]: next(iter(a["value"].values())) for a in sp["attributes"]}
                            got.append(sp)
                with receiver.lock:
                    receiver.spans.extend(got)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/v1/traces" % self.http.server_port
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def wait(self, pred, timeout=10):
        """The spans matching pred once at least one has arrived ([] after timeout)."""
        deadline = time.time() + timeout
        while True:
            with self.lock:
                got = [s for s in self.spans if pred(s)]
            if got or time.time() > deadline:
                return got
            time.sleep(0.1)

    def trace(self, trace_id):
        with self.lock:
            return [s for s in self.spans if s["traceId"] == trace_id]

    def close(self):
        self.http.shutdown()
