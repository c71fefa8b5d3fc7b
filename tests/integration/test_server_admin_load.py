"""The Admin load path under hostile input, on a real corvid-server with local HTTP origins.

Local loads: only regular GGUF files under model_dirs (a FIFO fails fast, "..", symlinks,
/etc/passwd and /proc/self/environ are outside, file://localhost/ works and any other
host is refused, a non-GGUF file's bytes never reach the error). Remote loads: refused
without model_sources (the error names the key), redirects only to allowed URLs, errors
that say "download failed: <reason>" and nothing about the origin. Downloads: a .part
is kept only for an interrupted origin that supports ranges (then resumed), restarted
when the origin ignores ranges or the .part is older than a day. A load stuck on a slow
origin is cancelled by `corvidctl admin unload`, and SIGTERM exits within the drain
timeout plus a few seconds."""
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time

import grpc

from corvid_testlib import BIN, DATA, TMP, Admin, Checks, Server, proto_modules, sha256_file as sha256

pb, admin_pb, _ = proto_modules()
F32 = os.path.join(DATA, "models", "stories260K.gguf")
Q4 = os.path.join(DATA, "models", "stories260K-Q4_0-mixed.gguf")
Q8 = os.path.join(DATA, "models", "stories260K-Q8_0-mixed.gguf")
MD = os.path.join(TMP, "models")       # the model_dirs entry besides the data directory
CACHE = os.path.join(TMP, "cache")
WWW = os.path.join(TMP, "www")
LOADING, READY, FAILED = admin_pb.SLOT_STATE_LOADING, admin_pb.SLOT_STATE_READY, admin_pb.SLOT_STATE_FAILED


class Origin(threading.Thread):
    """Serves WWW by path prefix: /full/ (no ranges), /cut/ (no ranges, cut halfway),
    /ranges/ (Accept-Ranges, 206), /rcut/ (ranges; a whole-file answer is cut halfway),
    /slow/ (answers after 60 s), /redirect-out/ (to localhost, not allowed) and
    /redirect-in/ (to /full/ on the same origin). Records each request's Range."""

    def __init__(self):
        seen = self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                kind, _, name = self.path.lstrip("/").partition("/")
                rng = self.headers.get("Range")
                seen.append((kind, rng))
                if kind == "slow":
                    time.sleep(60)
                    return
                if kind in ("redirect-out", "redirect-in"):
                    to = ("http://localhost:%d/full/%s" % (outer.port, name) if kind == "redirect-out"
                          else "/full/" + name)
                    self.send_response(302)
                    self.send_header("Location", to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if kind not in ("full", "cut", "ranges", "rcut"):
                    self.send_error(404)
                    return
                with open(os.path.join(WWW, name), "rb") as f:
                    data = f.read()
                ranges = kind in ("ranges", "rcut")
                start = int(rng.split("=")[1].split("-")[0]) if rng and ranges else 0
                self.send_response(206 if start else 200)
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if kind == "cut" or (kind == "rcut" and not start):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        super().__init__(daemon=True)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d/" % self.port

    def run(self):
        self.httpd.serve_forever()


def part(path):
    return os.path.join(CACHE, sha256(path) + ".gguf.part")


def cached(path):
    return os.path.join(CACHE, sha256(path) + ".gguf")


def forget(adm, path, *versions):
    for v in versions:
        adm.unload(v)
    for p in (cached(path), part(path)):
        if os.path.exists(p):
            os.remove(p)


# ---- local files ----

def fifo_fails_fast(adm):
    fifo = os.path.join(MD, "pipe.gguf")
    os.mkfifo(fifo)
    t0 = time.time()
    st = adm.load("fifo", fifo, timeout=10)
    assert st.state == FAILED and "not a regular file" in st.message, st.message
    assert time.time() - t0 < 5, time.time() - t0
    st = adm.load("after-fifo", os.path.join(MD, "q4.gguf"))
    assert st.state == READY, st.message
    adm.unload("after-fifo")
    adm.unload("fifo")


def outside_model_dirs(adm):
    link = os.path.join(MD, "passwd.gguf")
    os.symlink("/etc/passwd", link)
    cases = ["../../etc/passwd", "/etc/passwd", "/proc/self/environ", "file:///etc/shadow", link,
             os.path.join(MD, "..", "..", "..", "etc", "passwd"), "/nonexistent/x.gguf"]
    for i, uri in enumerate(cases):
        st = adm.load("out%d" % i, uri)
        assert st.state == FAILED and st.message.endswith(": outside model_dirs"), (uri, st.message)
        assert "root" not in st.message.replace(uri, ""), st.message
        adm.unload("out%d" % i)


def file_uris(adm):
    st = adm.load("fl", "file://localhost" + os.path.join(MD, "q4.gguf"))
    assert st.state == READY, st.message
    adm.unload("fl")
    st = adm.load("fl3", "file://" + os.path.join(MD, "q4.gguf"))
    assert st.state == READY, st.message
    adm.unload("fl3")
    e = adm.refused("fo", "file://otherhost" + os.path.join(MD, "q4.gguf"))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "otherhost" in e.details(), e.details()


def not_gguf_keeps_its_bytes(adm):
    secret = os.path.join(MD, "notes.gguf")
    with open(secret, "w") as f:
        f.write("SECRET-TOKEN-123456")
    st = adm.load("ng", secret)
    assert st.state == FAILED and st.message.endswith(": not a GGUF file"), st.message
    assert "SECR" not in st.message and "53 45" not in st.message.upper(), st.message
    adm.unload("ng")
    # A GGUF-looking file inside model_dirs gets the reader's precise error.
    bad = os.path.join(MD, "truncated.gguf")
    with open(Q4, "rb") as f, open(bad, "wb") as g:
        g.write(f.read()[:1000])
    st = adm.load("tr", bad)
    assert st.state == FAILED and "truncated.gguf" in st.message and "not a GGUF" not in st.message, st.message
    adm.unload("tr")


# ---- remote ----

def remote_needs_model_sources(origin):
    srv = Server("--model-cache-dir", CACHE)
    try:
        e = Admin(srv.addr).refused("r", origin.url + "full/q4.gguf", sha256(Q4))
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "model_sources" in e.details(), e.details()
        assert "--model-sources" in e.details(), e.details()
    finally:
        srv.stop()


def sources_and_redirects(adm, origin):
    e = adm.refused("elsewhere", "http://localhost:%d/full/q4.gguf" % origin.port, sha256(Q4))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "model_sources" in e.details(), e.details()
    st = adm.load("rout", origin.url + "redirect-out/q4.gguf", sha256(Q4))
    assert st.state == FAILED and st.message == "download failed: redirected to a URL outside model_sources", \
        st.message
    assert not any(k == "full" for k, _ in origin.seen), origin.seen
    assert not os.path.exists(part(Q4))
    adm.unload("rout")
    st = adm.load("rin", origin.url + "redirect-in/q4.gguf", sha256(Q4))
    assert st.state == READY, st.message
    forget(adm, Q4, "rin")
    st = adm.load("refused", origin.url + "nothing-here/q4.gguf", sha256(Q4))
    assert st.state == FAILED and st.message == "download failed: the origin refused the request", st.message
    adm.unload("refused")
    st = adm.load("badsha", origin.url + "full/q4.gguf", sha256(Q8))
    assert st.state == FAILED and st.message == "download failed: sha256 mismatch", st.message
    assert sha256(Q4) not in st.message and not os.listdir(CACHE), (st.message, os.listdir(CACHE))
    adm.unload("badsha")


def rangeless_origin(adm, origin):
    # Cut halfway by an origin without ranges: nothing is kept, the retry starts over.
    st = adm.load("cut", origin.url + "cut/q4.gguf", sha256(Q4))
    assert st.state == FAILED and st.message == "download failed: interrupted", st.message
    assert not os.path.exists(part(Q4)), os.listdir(CACHE)
    del origin.seen[:]
    st = adm.load("full", origin.url + "full/q4.gguf", sha256(Q4))
    assert st.state == READY, st.message
    assert origin.seen == [("full", None)], origin.seen
    adm.unload("cut")
    adm.unload("full")
    # A .part left from elsewhere: the range-less origin answers 200, the file starts over.
    with open(Q8, "rb") as f, open(part(Q8), "wb") as p:
        p.write(f.read()[:100000])
    del origin.seen[:]
    st = adm.load("stale", origin.url + "full/q8.gguf", sha256(Q8))
    assert st.state == READY, st.message
    assert origin.seen == [("full", "bytes=100000-")], origin.seen
    assert sha256(cached(Q8)) == sha256(Q8)
    forget(adm, Q8, "stale")


def ranged_origin_resumes(adm, origin):
    del origin.seen[:]
    st = adm.load("rcut", origin.url + "rcut/f32.gguf", sha256(F32))
    assert st.state == FAILED and st.message == "download failed: interrupted", st.message
    half = os.path.getsize(F32) // 2
    assert os.path.getsize(part(F32)) == half, os.listdir(CACHE)
    adm.unload("rcut")
    st = adm.load("rcut", origin.url + "rcut/f32.gguf", sha256(F32))
    assert st.state == READY, st.message
    assert origin.seen == [("rcut", None), ("rcut", "bytes=%d-" % half)], origin.seen
    assert sha256(cached(F32)) == sha256(F32) and not os.path.exists(part(F32))
    forget(adm, F32, "rcut")
    # A .part older than a day is not trusted: the download starts over.
    forget(adm, Q4)
    with open(part(Q4), "wb") as p:
        p.write(b"x" * 5000)
    old = time.time() - 25 * 3600
    os.utime(part(Q4), (old, old))
    del origin.seen[:]
    st = adm.load("old", origin.url + "ranges/q4.gguf", sha256(Q4))
    assert st.state == READY, st.message
    assert origin.seen == [("ranges", None)], origin.seen
    forget(adm, Q4, "old")


def unload_cancels_a_stuck_load(srv, adm, origin):
    adm.load("stuck", origin.url + "slow/q4.gguf", sha256(Q4), wait=False)
    assert adm.slots()["stuck"].state == LOADING
    e = adm.refused("other", os.path.join(MD, "q4.gguf"))
    assert e.code() == grpc.StatusCode.ABORTED and "stuck" in e.details(), e.details()
    t0 = time.time()
    r = subprocess.run([os.path.join(BIN, "corvidctl"), "admin", "unload", "--version", "stuck", "--wait",
                        "-a", srv.addr], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "unloaded" in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert time.time() - t0 < 5, time.time() - t0
    assert "stuck" not in adm.slots(), adm.slots()
    st = adm.load("other", os.path.join(MD, "q4.gguf"))
    assert st.state == READY, st.message
    adm.unload("other")


def sigterm_with_a_stuck_load(origin):
    srv = Server("--model-cache-dir", os.path.join(TMP, "cache-term"), "--model-sources", origin.url,
                 "--drain-timeout", "2")
    try:
        adm = Admin(srv.addr)
        out = {}

        def wait_load():
            try:
                out["st"] = adm.load("stuck", origin.url + "slow/q8.gguf", sha256(Q8), timeout=60)
            except grpc.RpcError as e:
                out["err"] = e.code()

        t = threading.Thread(target=wait_load)
        t.start()
        deadline = time.time() + 10
        while "stuck" not in adm.slots() and time.time() < deadline:
            time.sleep(0.05)
        t0 = time.time()
        srv.terminate()
        rc = srv.wait(2 + 5)
        assert rc == 0 and "Sanitizer" not in srv.output(), (rc, srv.output())
        print("  SIGTERM with a stuck load: exited in %.2f s (drain timeout 2 s)" % (time.time() - t0))
        t.join(10)
        assert out, out
    finally:
        srv.stop()


def main():
    c = Checks()
    for d in (MD, CACHE, WWW):
        os.makedirs(d, exist_ok=True)
    shutil.copy(Q4, os.path.join(MD, "q4.gguf"))
    for src, name in ((Q4, "q4.gguf"), (Q8, "q8.gguf"), (F32, "f32.gguf")):
        shutil.copy(src, os.path.join(WWW, name))
    origin = Origin()
    origin.start()
    srv = Server("--model", F32, "--model-version", "v1", "--model-cache-dir", CACHE,
                 "--model-dirs", os.path.dirname(F32) + "," + MD, "--model-sources", origin.url)
    adm = Admin(srv.addr)
    try:
        c.run("a FIFO fails fast with 'not a regular file'; the next load works", fifo_fails_fast, adm)
        c.run("'..', symlinks, /etc/passwd, /proc/self/environ: outside model_dirs", outside_model_dirs, adm)
        c.run("file:///PATH and file://localhost/PATH load; file://otherhost/ is refused", file_uris, adm)
        c.run("a non-GGUF file: 'not a GGUF file' without its bytes", not_gguf_keeps_its_bytes, adm)
        c.run("remote URIs: only model_sources prefixes and redirects; short errors", sources_and_redirects, adm,
              origin)
        c.run("downloads: a range-less origin restarts from zero, never 'Cannot resume'", rangeless_origin, adm,
              origin)
        c.run("downloads: an interrupted ranged origin resumes; a day-old .part restarts", ranged_origin_resumes,
              adm, origin)
        c.run("corvidctl admin unload cancels a load stuck on a slow origin", unload_cancels_a_stuck_load, srv, adm,
              origin)
        v1 = adm.slots()["v1"]
        assert v1.state == READY and v1.weight == 100, v1
    finally:
        srv.terminate()
        rc = srv.wait(30)
        srv.stop()

    def exited_cleanly():
        assert rc == 0 and "Sanitizer" not in srv.output() and "runtime error" not in srv.output(), \
            (rc, srv.output()[-3000:])

    c.run("the server exits 0 after SIGTERM, sanitizers quiet", exited_cleanly)
    c.run("remote URIs without model_sources are refused, naming the key", remote_needs_model_sources, origin)
    c.run("SIGTERM with a load stuck on a slow origin exits within the drain timeout", sigterm_with_a_stuck_load,
          origin)
    origin.httpd.shutdown()
    shutil.rmtree(TMP, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    main()
