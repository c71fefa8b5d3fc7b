"""corvid-server streaming generation, driven by Python grpcio (an independent client)
against the real stories260K model: batching must not change greedy tokens, and every
error path must give its gRPC status with a clear message."""
import json
import os
import subprocess
import threading
import time

import grpc

from corvid_testlib import BIN, DATA, GEMMA, Checks, Server, expect_status, have_model, proto_modules

pb, admin_pb, health_pb = proto_modules()
MODEL = os.path.join(DATA, "models", "stories260K.gguf")
PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben", "One day, a bird", "Tom had a red ball",
           "The sun was", "In the park", "Mom said"]


def generate_rpc(ch):
    return ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                           response_deserializer=pb.GenerateResponse.FromString)


def run_stream(addr, prompt, n, timeout=60, **sampling):
    """Returns (ids, text, final) of one greedy stream."""
    with grpc.insecure_channel(addr) as ch:
        req = pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(max_tokens=n, **sampling))
        ids, text, final = [], "", None
        for msg in generate_rpc(ch)(req, timeout=timeout):
            kind = msg.WhichOneof("kind")
            assert final is None, "message after the final"
            if kind == "chunk":
                ids += list(msg.chunk.token_ids)
                text += msg.chunk.text
            elif kind == "final":
                final = msg.final
        assert final is not None, "stream ended without a final message"
        return ids, text, final


def corvid_run_greedy(prompt, n):
    r = subprocess.run([os.path.join(BIN, "corvid-run"), "-m", MODEL, "-p", prompt, "-n", str(n), "--temp", "0",
                        "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def single_stream_matches_corvid_run(srv):
    ids, text, final = run_stream(srv.addr, "Once upon a time", 40, ignore_eos=True)
    ref = corvid_run_greedy("Once upon a time", 40)
    assert ids == ref["tokens"], (ids, ref["tokens"])
    assert text == ref["text"][len("Once upon a time"):] or ref["text"].endswith(text), (text, ref["text"])
    assert final.finish_reason == pb.FINISH_REASON_LENGTH
    assert final.usage.prompt_tokens == len(ref["prompt_tokens"])
    assert final.usage.completion_tokens == 40
    assert final.model_version == "stories260K"
    assert final.time_to_first_token_ms > 0


def concurrent_greedy_streams_equal_corvid_run(srv):
    refs = {p: corvid_run_greedy(p, 48)["tokens"] for p in PROMPTS}
    results, errors = {}, []

    def worker(i):
        p = PROMPTS[i % len(PROMPTS)]
        try:
            results[i] = (p, run_stream(srv.addr, p, 48, ignore_eos=True)[0])
        except Exception as e:  # collected and asserted below
            errors.append((i, repr(e)))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    bad = [(i, p) for i, (p, ids) in results.items() if ids != refs[p]]
    assert not bad, "batched greedy differs from corvid-run for %s" % bad[:4]


def seeded_sampling_is_reproducible(srv):
    a = run_stream(srv.addr, "The little dog", 30, temperature=0.9, top_k=40, seed=pb.UInt64Value(value=7))
    b = run_stream(srv.addr, "The little dog", 30, temperature=0.9, top_k=40, seed=pb.UInt64Value(value=7))
    assert a[0] == b[0] and a[2].seed == 7


def stop_string_ends_the_stream(srv):
    ids, text, final = run_stream(srv.addr, "Once upon a time", 60, stop=["Lily"])
    assert final.finish_reason == pb.FINISH_REASON_STOP, final
    assert final.stop_string == "Lily"
    assert "Lily" not in text, text
    ref = corvid_run_greedy("Once upon a time", 60)["text"]
    assert "Lily" in ref  # the reference text does contain the stop string
    assert ref.split("Lily")[0].endswith(text), (text, ref)


def bad_requests(srv):
    with grpc.insecure_channel(srv.addr) as ch:
        gen = generate_rpc(ch)
        expect_status(lambda: list(gen(pb.GenerateRequest(prompt=""), timeout=10)), grpc.StatusCode.INVALID_ARGUMENT,
                      "prompt")
        long_prompt = " ".join(["time"] * 400)
        expect_status(lambda: list(gen(pb.GenerateRequest(prompt=long_prompt), timeout=10)),
                      grpc.StatusCode.INVALID_ARGUMENT, "the context holds 128")
        expect_status(lambda: list(gen(pb.GenerateRequest(prompt="Hi", sampling=pb.SamplingParams(top_p=1.5)),
                                       timeout=10)), grpc.StatusCode.INVALID_ARGUMENT, "top_p")
        expect_status(lambda: list(gen(pb.GenerateRequest(prompt="Hi", model="gpt-9"), timeout=10)),
                      grpc.StatusCode.NOT_FOUND, "gpt-9")
        raw = ch.unary_stream("/corvid.v1.Inference/Generate")
        expect_status(lambda: list(raw(b"\x12\xff\xff\xff", timeout=10)), grpc.StatusCode.INVALID_ARGUMENT,
                      "malformed")


def deadline_exceeded():
    """A request whose deadline passes while it waits behind others: the client gets
    DEADLINE_EXCEEDED, the server drops it and everyone else finishes normally."""
    srv = Server("--model", MODEL, "--max-running", "1", "--max-waiting", "32")
    try:
        done, errors = [], []

        def long_stream():
            try:
                done.append(run_stream(srv.addr, "Once upon a time", 120, ignore_eos=True)[2].finish_reason)
            except Exception as e:  # collected and asserted below
                errors.append(repr(e))

        # 24 full-context streams ahead of it take far longer than its 30 ms deadline.
        ts = [threading.Thread(target=long_stream) for _ in range(24)]
        for t in ts:
            t.start()
        time.sleep(0.02)
        with grpc.insecure_channel(srv.addr) as ch:
            req = pb.GenerateRequest(prompt="Once upon a time", sampling=pb.SamplingParams(max_tokens=100,
                                                                                          ignore_eos=True))
            expect_status(lambda: [m for m in generate_rpc(ch)(req, timeout=0.03)],
                          grpc.StatusCode.DEADLINE_EXCEEDED)
        for t in ts:
            t.join()
        assert not errors and done == [pb.FINISH_REASON_LENGTH] * 24, (errors, done)
    finally:
        srv.stop()


def corvidctl_streams_and_reports(srv):
    ctl = os.path.join(BIN, "corvidctl")
    r = subprocess.run([ctl, "generate", "-a", srv.addr, "-p", "Once upon a time", "-n", "24", "--ignore-eos",
                        "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    ref = corvid_run_greedy("Once upon a time", 24)
    assert out["tokens"] == ref["tokens"], (out, ref)
    assert out["finish_reason"] == "length" and out["model_version"] == "stories260K"
    assert out["ttft_ms"] > 0
    r = subprocess.run([ctl, "generate", "-a", srv.addr, "-p", "Once upon a time", "-n", "24", "--ignore-eos"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == out["text"].strip(), (r.stdout, out["text"])
    r = subprocess.run([ctl, "health", "-a", srv.addr, "--service", "corvid.v1.Inference"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "SERVING", (r.returncode, r.stdout, r.stderr)
    r = subprocess.run([ctl, "generate", "-a", srv.addr, "-p", "Hi", "--top-p", "0.5", "--model", "nope"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and "nope" in r.stderr, r.stderr


def slow_reader_stalls_nobody(srv):
    """A client that opens streams and reads nothing must not hold up the engine or
    another client: the reader's streams still finish once it reads."""
    ch = grpc.insecure_channel(srv.addr)
    gen = generate_rpc(ch)
    idle = [gen(pb.GenerateRequest(prompt=p, sampling=pb.SamplingParams(max_tokens=100, ignore_eos=True)),
                timeout=60) for p in PROMPTS[:4]]
    t0 = time.time()
    ids, _, final = run_stream(srv.addr, "Once upon a time", 100, ignore_eos=True)
    busy_s = time.time() - t0
    assert final.finish_reason == pb.FINISH_REASON_LENGTH and len(ids) == 100
    for call in idle:  # read late: everything was kept (coalesced) and arrives in order
        got = [m for m in call]
        assert got[-1].WhichOneof("kind") == "final" and got[-1].final.usage.completion_tokens == 100
        assert sum(len(m.chunk.token_ids) for m in got if m.WhichOneof("kind") == "chunk") == 100
    ch.close()
    print("slow reader: the other stream took %.3f s" % busy_s)


def tokenize_and_list_models(srv):
    with grpc.insecure_channel(srv.addr) as ch:
        tok = ch.unary_unary("/corvid.v1.Inference/Tokenize", request_serializer=pb.TokenizeRequest.SerializeToString,
                             response_deserializer=pb.TokenizeResponse.FromString)
        r = tok(pb.TokenizeRequest(text="Once upon a time"), timeout=5)
        assert list(r.ids) == [1, 403, 407, 261, 378], list(r.ids)
        lm = ch.unary_unary("/corvid.v1.Inference/ListModels",
                            request_serializer=pb.ListModelsRequest.SerializeToString,
                            response_deserializer=pb.ListModelsResponse.FromString)
        m = lm(pb.ListModelsRequest(), timeout=5).models
        assert len(m) == 1 and m[0].version == "stories260K" and m[0].architecture == "llama", m
        assert m[0].context_length == 128 and m[0].vocab_size == 512


def queue_overflow():
    srv = Server("--model", MODEL, "--max-running", "1", "--max-waiting", "1", "--max-batch-tokens", "16")
    try:
        codes, lock = [], threading.Lock()

        def worker():
            try:
                run_stream(srv.addr, "Once upon a time", 100, ignore_eos=True)
                c = "OK"
            except grpc.RpcError as e:
                c = (e.code(), e.details())
            with lock:
                codes.append(c)

        ts = [threading.Thread(target=worker) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        busy = [c for c in codes if c != "OK"]
        assert busy, codes
        for code, details in busy:
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
            assert "max_running 1" in details and "max_waiting 1" in details, details
        assert codes.count("OK") >= 2, codes
    finally:
        srv.stop()


def sigterm_drains_in_flight_streams():
    """Gemma 3 270M takes most of a second for 100 tokens on a CPU, so SIGTERM lands
    mid-stream (stories260K would have finished): the stream still ends whole, health Check
    answers NOT_SERVING during the drain, another call made then is UNAVAILABLE, and the
    server exits 0."""
    srv = Server("--model", GEMMA)
    try:
        started, out = threading.Event(), {}
        req = pb.GenerateRequest(prompt="Once upon a time", sampling=pb.SamplingParams(max_tokens=100,
                                                                                      ignore_eos=True))

        def worker():
            with grpc.insecure_channel(srv.addr) as ch:
                ids, final = [], None
                for msg in generate_rpc(ch)(req, timeout=60):
                    if msg.WhichOneof("kind") == "chunk":
                        ids += list(msg.chunk.token_ids)
                        started.set()
                    else:
                        final = msg.final
                out["r"] = (ids, final)

        t = threading.Thread(target=worker)
        t.start()
        assert started.wait(30), "no first token: " + srv.output()
        srv.terminate()
        with grpc.insecure_channel(srv.addr) as ch:
            # The signal is handled asynchronously: the drain has begun once a health check
            # answers NOT_SERVING. Health is answered (status OK) throughout the drain, for
            # the whole server and per service; every other call is UNAVAILABLE.
            check = ch.unary_unary("/grpc.health.v1.Health/Check",
                                   request_serializer=health_pb.HealthCheckRequest.SerializeToString,
                                   response_deserializer=health_pb.HealthCheckResponse.FromString)
            deadline = time.time() + 10
            while check(health_pb.HealthCheckRequest(), timeout=5).status == health_pb.HealthCheckResponse.SERVING:
                assert time.time() < deadline, "health still SERVING 10 s after SIGTERM"
                time.sleep(0.01)
            for service in ("", "corvid.v1.Inference", "corvid.v1.Admin"):
                st = check(health_pb.HealthCheckRequest(service=service), timeout=5).status
                assert st == health_pb.HealthCheckResponse.NOT_SERVING, (service, st)
            expect_status(lambda: list(generate_rpc(ch)(req, timeout=10)), grpc.StatusCode.UNAVAILABLE, "draining")
        assert "r" not in out, "the stream ended before the drain was checked: the model is too fast for this test"
        t.join(60)
        assert "r" in out, "in-flight stream did not complete: " + srv.output()
        ids, final = out["r"]
        assert final.finish_reason == pb.FINISH_REASON_LENGTH and len(ids) == 100, (final, len(ids))
        assert srv.wait(timeout=30) == 0, srv.output()
    finally:
        srv.stop()


def output_goes_out_in_rounds():
    """stories260K makes a token in well under a millisecond: with the default 5 ms
    rounds its 123 tokens arrive in a few messages, the first token alone (it is the
    TTFT); with --stream-flush-ms 0 nothing is held back. Same tokens either way."""
    got = {}
    for flush in ("5", "0"):
        srv = Server("--model", MODEL, "--stream-flush-ms", flush)
        try:
            with grpc.insecure_channel(srv.addr) as ch:
                req = pb.GenerateRequest(prompt="Once upon a time",
                                         sampling=pb.SamplingParams(max_tokens=123, ignore_eos=True))
                msgs = [m for m in generate_rpc(ch)(req, timeout=60)]
        finally:
            srv.stop()
        chunks = [list(m.chunk.token_ids) for m in msgs if m.WhichOneof("kind") == "chunk"]
        assert msgs[-1].WhichOneof("kind") == "final" and msgs[-1].final.usage.completion_tokens == 123
        got[flush] = (chunks, sum(chunks, []))
    rounds, ids = got["5"]
    print("5 ms rounds: %d chunk messages for 123 tokens, sizes %s" % (len(rounds), [len(c) for c in rounds]))
    assert len(rounds[0]) == 1, rounds[0]
    assert len(rounds) <= 40, len(rounds)
    assert ids == got["0"][1]


def main():
    c = Checks()
    srv = Server("--model", MODEL, "--threads", "2")
    try:
        c.run("one stream equals corvid-run greedy", single_stream_matches_corvid_run, srv)
        c.run("32 concurrent greedy streams equal corvid-run", concurrent_greedy_streams_equal_corvid_run, srv)
        c.run("same seed, same tokens", seeded_sampling_is_reproducible, srv)
        c.run("stop string ends the stream, held back", stop_string_ends_the_stream, srv)
        c.run("bad requests: INVALID_ARGUMENT / NOT_FOUND with messages", bad_requests, srv)
        c.run("tokenize and list models", tokenize_and_list_models, srv)
        c.run("slow readers stall nobody; their output waits, coalesced", slow_reader_stalls_nobody, srv)
        c.run("corvidctl streams, --json equals corvid-run, health, errors", corvidctl_streams_and_reports, srv)
    finally:
        srv.terminate()
        srv.wait(30)
        srv.stop()
    c.run("queue overflow is RESOURCE_EXHAUSTED with the limits", queue_overflow)
    c.run("deadline passes while queued: DEADLINE_EXCEEDED, others unaffected", deadline_exceeded)
    if have_model(GEMMA, "SIGTERM drain (Gemma 3 270M)"):
        c.run("SIGTERM lets in-flight streams finish, exit 0", sigterm_drains_in_flight_streams)
    c.run("a fast model's output goes out in rounds; the first token alone", output_goes_out_in_rounds)
    c.finish()


main()
