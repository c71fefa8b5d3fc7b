"""Gemma 3 270M's sliding-window layers (window 512) keep a ring of positions in the KV
cache instead of all of them: long generations, far past the window and the ring,
must give the same greedy tokens as a cache that keeps every position, through
corvid-run and through corvid-server's batching engine, in less memory.

Needs the real model (`make models`); without it the checks are a visible SKIP.
"""
import json
import os
import subprocess
import sys
import threading
import urllib.request

import grpc

from corvid_testlib import BIN, GEMMA, Checks, Server, free_port, proto_modules

pb, _, _ = proto_modules()
CTX = 2048
LONG = ("The history of the Roman Empire begins with", 1500)
SHORT = ("Once upon a time, in a small village by the sea,", 400)


def corvid_run(prompt, n, *extra):
    r = subprocess.run([os.path.join(BIN, "corvid-run"), "-m", GEMMA, "-p", prompt, "-n", str(n), "--temp", "0",
                        "--json", "-t", "2", "--ctx", str(CTX), *extra], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def stream(addr, prompt, n, out):
    with grpc.insecure_channel(addr) as ch:
        rpc = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        req = pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(max_tokens=n, temperature=0))
        for msg in rpc(req, timeout=600):
            if msg.WhichOneof("kind") == "chunk":
                out.extend(msg.chunk.token_ids)


def run_ring_equals_full_cache(ref):
    full = corvid_run(*LONG, "--swa-full-cache")
    ring = ref[LONG]
    assert len(ring["tokens"]) == LONG[1], "the generation stopped at %d tokens" % len(ring["tokens"])
    same = next((i for i, (a, b) in enumerate(zip(ring["tokens"], full["tokens"])) if a != b), None)
    assert ring["tokens"] == full["tokens"], "first difference at generated token %s" % same
    # 18 layers of one 256-wide kv head (f16): 1 KiB per layer and position. The 15
    # sliding layers keep a ring of 48 blocks of 16 positions (768), the 3 global ones
    # all 128 blocks, 5 to a memory block of 15 layers' block.
    print("KV cache for %d positions: %.2f MiB with the ring, %.2f MiB without" %
          (CTX, ring["kv_bytes"] / 2**20, full["kv_bytes"] / 2**20))
    assert full["kv_bytes"] == 18 * 1024 * CTX
    assert ring["kv_bytes"] == (48 + 26) * 15 * 16 * 1024


def server_streams_equal_corvid_run(ref):
    srv = Server("--model", GEMMA, "--ctx", str(CTX), "--threads", "2", ready_timeout=120)
    try:
        outs = {case: [] for case in ref}
        threads = [threading.Thread(target=stream, args=(srv.addr, case[0], case[1], outs[case])) for case in ref]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for case, got in outs.items():
            want = ref[case]["tokens"]
            same = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
            assert got == want, "%r: %d tokens, %d from corvid-run, first difference at %s" % (
                case[0], len(got), len(want), same)
    finally:
        srv.stop()


def server_full_cache_switch(ref):
    """kv_swa_full_cache 1 turns the rings off in the server: the default 512 MiB budget
    then holds memory blocks of all 18 layers instead of the 15 sliding ones, and the
    tokens stay corvid-run's."""
    for flag, layers in (("0", 15), ("1", 18)):
        mport = free_port()
        srv = Server("--model", GEMMA, "--ctx", str(CTX), "--threads", "2", "--kv-swa-full-cache", flag,
                     "--metrics-listen", "127.0.0.1:%d" % mport, ready_timeout=120)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
                lines = [ln for ln in r.read().decode().splitlines() if ln.startswith("corvid_kv_blocks_total{")]
            assert len(lines) == 1, lines
            total = int(float(lines[0].split()[-1]))
            assert total == (512 << 20) // (layers * 16 * 1024), (flag, total)
            if flag == "1":
                got = []
                stream(srv.addr, SHORT[0], SHORT[1], got)
                assert got == ref[SHORT]["tokens"], "full-cache server differs from corvid-run"
        finally:
            srv.stop()


def main():
    c = Checks()
    if not os.path.exists(GEMMA):
        print("SKIP %s: not there (run `make models`)" % GEMMA)
        c.finish()
    ref = {case: corvid_run(*case) for case in (LONG, SHORT)}
    c.run("corvid-run: %d tokens past the window, ring == every position" % LONG[1], run_ring_equals_full_cache, ref)
    c.run("corvid-server: two batched streams == corvid-run", server_streams_equal_corvid_run, ref)
    c.run("corvid-server --kv-swa-full-cache 1: every position kept, same tokens", server_full_cache_switch, ref)
    c.finish()


if __name__ == "__main__":
    sys.exit(main())
