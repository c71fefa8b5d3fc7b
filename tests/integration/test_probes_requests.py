"""Probe suite (issue 17.7): malformed and hostile requests against a real
corvid-server (stories260K, grpcio sending raw bytes). Every method of Inference,
Admin and Health gets the same eight malformed wires (truncated tag, truncated and
past-the-end lengths, a varint without its value, group wire types, field number 0, a
2^63 length) and must answer INVALID_ARGUMENT "malformed <Type>"; empty requests and
unknown fields get the status the API promises; the health service name is checked as
text like every other string (Admin's and Inference's are in test_server_validation);
oversized messages are RESOURCE_EXHAUSTED by gRPC's limit; JWT attacks that only exist
on the wire (an oversized token, two authorization headers, a kid that is a path) are
UNAUTHENTICATED; a cancelled stream frees its slot; kill -9 mid-stream gives clients
UNAVAILABLE at once and a restarted server serves. The server keeps serving after each
group (a Generate at the end of every check)."""
import json
import os
import signal
import subprocess
import sys
import time

import grpc

from corvid_testlib import DATA, ROOT, TMP, Checks, Server, proto_modules

pb, admin_pb, health_pb = proto_modules()
MODEL = os.path.join(DATA, "models", "stories260K.gguf")
INVALID = grpc.StatusCode.INVALID_ARGUMENT

# (method path, server streaming, request type name)
METHODS = [("/corvid.v1.Inference/Generate", True, "GenerateRequest"),
           ("/corvid.v1.Inference/Chat", True, "ChatRequest"),
           ("/corvid.v1.Inference/Tokenize", False, "TokenizeRequest"),
           ("/corvid.v1.Inference/ListModels", False, "ListModelsRequest"),
           ("/corvid.v1.Admin/LoadModel", False, "LoadModelRequest"),
           ("/corvid.v1.Admin/UnloadModel", False, "UnloadModelRequest"),
           ("/corvid.v1.Admin/GetStatus", False, "GetStatusRequest"),
           ("/corvid.v1.Admin/SetTraffic", False, "SetTrafficRequest"),
           ("/corvid.v1.Admin/SetFaultInjection", False, "SetFaultInjectionRequest"),
           ("/grpc.health.v1.Health/Check", False, "HealthCheckRequest")]

MALFORMED = [b"\xff",                                 # a tag varint cut short
             b"\x12\xff\xff\xff",                     # field 2, length varint cut short
             b"\x12\x05ab",                           # field 2, 5 bytes announced, 2 sent
             b"\x08",                                 # field 1 varint without its value
             b"\x0b", b"\x0c",                        # start / end group wire types
             b"\x00\x00",                             # field number 0
             b"\x12" + b"\xff" * 9 + b"\x7f" + b"x"]  # a length of 2^63 and more


def call(ch, method, stream, body, metadata=None, timeout=20):
    """(code, details) of sending body to method; OK with "" on success."""
    rpc = ch.unary_stream(method) if stream else ch.unary_unary(method)
    try:
        r = rpc(body, timeout=timeout, metadata=metadata)
        if stream:
            list(r)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def still_serves(srv):
    with grpc.insecure_channel(srv.addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        out = list(gen(pb.GenerateRequest(prompt="Once", sampling=pb.SamplingParams(max_tokens=3)), timeout=30))
    assert out[-1].final.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH), out[-1]


def malformed_everywhere(srv):
    failures = []
    with grpc.insecure_channel(srv.addr) as ch:
        for method, stream, typ in METHODS:
            for wire in MALFORMED:
                code, details = call(ch, method, stream, wire)
                if code != INVALID or details != "malformed " + typ:
                    failures.append((method, wire, code, details))
    assert not failures, "\n".join(map(str, failures))
    still_serves(srv)


def empty_and_unknown_fields(srv):
    """An empty request is every field's default: the API's answer for that. A field
    this server does not know (number 999, as a newer client may send) is ignored."""
    want = {"Generate": (INVALID, "prompt:"), "Tokenize": (grpc.StatusCode.OK, ""),
            "ListModels": (grpc.StatusCode.OK, ""), "LoadModel": (INVALID, "version:"),
            "UnloadModel": (INVALID, "version:"), "GetStatus": (grpc.StatusCode.OK, ""),
            "Check": (grpc.StatusCode.OK, ""),
            # The model's file names no template and the request names none either.
            "Chat": (grpc.StatusCode.FAILED_PRECONDITION, "chat_template:"),
            # Only CORVID_TESTING builds have fault injection.
            "SetFaultInjection": (grpc.StatusCode.FAILED_PRECONDITION, "fault injection")}
    unknown = b"\xb8\x3e\x01"  # field 999, varint 1
    failures = []
    with grpc.insecure_channel(srv.addr) as ch:
        for method, stream, _ in METHODS:
            name = method.rsplit("/", 1)[1]
            if name not in want:
                continue
            for body in (b"", unknown):
                code, details = call(ch, method, stream, body)
                if (code, details[:len(want[name][1])]) != want[name]:
                    failures.append((name, body, code, details))
    assert not failures, "\n".join(map(str, failures))
    still_serves(srv)


def health_service_name_is_text(srv):
    check = "/grpc.health.v1.Health/Check"
    cases = [(health_pb.HealthCheckRequest(service="corvid.v1.Inference\x00x").SerializeToString(),
              "service: NUL (U+0000) at byte 19"),
             (b"\x0a\x03ab\xff", "service: not valid UTF-8 at byte 2"),
             (health_pb.HealthCheckRequest(service="s" * 200).SerializeToString(), "service: 200 bytes, at most 127")]
    with grpc.insecure_channel(srv.addr) as ch:
        for body, want in cases:
            code, details = call(ch, check, False, body)
            assert code == INVALID and details.startswith(want), (body[:30], code, details)
        # The name before the NUL is a real service: it must not be answered as that one.
        code, _ = call(ch, check, False, health_pb.HealthCheckRequest(service="corvid.v1.Inference").SerializeToString())
        assert code == grpc.StatusCode.OK


def oversized_messages(srv):
    """gRPC's 4 MiB receive limit holds for every method, before any of our code."""
    big = pb.TokenizeRequest(text="a" * (5 << 20)).SerializeToString()
    with grpc.insecure_channel(srv.addr, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        for method, stream, _ in METHODS:
            code, details = call(ch, method, stream, big)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details, (method, code, details)
    still_serves(srv)


def cancel_frees_the_slot(srv):
    """A stream cancelled after its first chunk: GetStatus shows nothing in flight soon
    after, and the next request runs."""
    with grpc.insecure_channel(srv.addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        status = ch.unary_unary("/corvid.v1.Admin/GetStatus",
                                request_serializer=admin_pb.GetStatusRequest.SerializeToString,
                                response_deserializer=admin_pb.GetStatusResponse.FromString)
        for _ in range(5):
            it = gen(pb.GenerateRequest(prompt="Once", sampling=pb.SamplingParams(max_tokens=120, ignore_eos=True)),
                     timeout=60)
            next(it)
            it.cancel()
        deadline = time.time() + 10
        while status(admin_pb.GetStatusRequest(), timeout=10).running_sequences and time.time() < deadline:
            time.sleep(0.05)
        assert status(admin_pb.GetStatusRequest(), timeout=10).running_sequences == 0
    still_serves(srv)


def jwt_on_the_wire():
    """What only a real request carries: a token over 8 KiB, two authorization
    headers (the first, bad, one decides), a kid that is a path, a valid token after the
    scheme in lower case."""
    secret = os.path.join(TMP, "hs.secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex())
    policy = os.path.join(TMP, "policy.json")
    with open(policy, "w") as f:
        json.dump({"jwt": {"keys": [{"kid": "k1", "alg": "HS256", "secret_file": secret}]}}, f)

    def mint(claims, kid="k1"):
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "data", "auth", "mint_jwt.py"),
                            "--alg", "HS256", "--key", secret, "--kid", kid, "--ttl", "300", json.dumps(claims)],
                           capture_output=True, text=True, check=True)
        return r.stdout.strip()

    srv = Server("--model", MODEL, "--threads", "1", "--auth-config", policy)
    try:
        good = mint({"sub": "a", "scope": "inference"})
        huge = mint({"sub": "a", "scope": "inference", "pad": "x" * 6100})  # just over 8192 bytes
        assert 8192 < len(huge) < 8400, len(huge)
        path_kid = mint({"sub": "a", "scope": "inference"}, kid="../../../etc/passwd")
        U = grpc.StatusCode.UNAUTHENTICATED
        body = pb.ListModelsRequest().SerializeToString()
        m = "/corvid.v1.Inference/ListModels"
        # gRPC's 8 KiB metadata limit stops it before the verifier's own 8192: the core
        # answers RESOURCE_EXHAUSTED or closes the connection (UNAVAILABLE), its choice.
        with grpc.insecure_channel(srv.addr) as ch:
            got, details = call(ch, m, False, body, metadata=[("authorization", "Bearer " + huge)])
            assert (got, details) in ((grpc.StatusCode.RESOURCE_EXHAUSTED, "received initial metadata size exceeds limit"),
                                      (grpc.StatusCode.UNAVAILABLE, "Socket closed")), (got, details)
        with grpc.insecure_channel(srv.addr) as ch:
            for md, code, needle in [
                    ([("authorization", "Bearer " + path_kid)], U, "matches no configured key"),
                    ([("authorization", "Bearer x.y.z"), ("authorization", "Bearer " + good)], U, "invalid token"),
                    ([("authorization", "bearer " + good)], grpc.StatusCode.OK, "")]:
                got, details = call(ch, m, False, body, metadata=md)
                assert got == code and needle in details, (md[0][1][:40], got, details)
                assert good not in details and huge not in details
    finally:
        srv.stop()


def kill_9_mid_stream():
    """SIGKILL with streams in flight: every client returns within seconds (no hang),
    with UNAVAILABLE, or OK and its final message if its stream had ended; a new server
    on the same port serves. 31 streams run 2 at a time; after the first token of one
    the server is stopped (SIGSTOP), a 32nd request goes out (certainly unanswered),
    then SIGKILL."""
    srv = Server("--model", MODEL, "--threads", "1", "--max-running", "2", "--max-waiting", "64")
    port = srv.port
    results = []
    with grpc.insecure_channel(srv.addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        req = pb.GenerateRequest(prompt="Once", sampling=pb.SamplingParams(max_tokens=100000, ignore_eos=True))
        streams = [gen(req, timeout=30) for _ in range(31)]
        next(streams[0])
        srv.proc.send_signal(signal.SIGSTOP)
        streams.append(gen(req, timeout=30))
        time.sleep(0.2)
        srv.proc.send_signal(signal.SIGKILL)
        t0 = time.time()
        for s in streams:
            try:
                out = list(s)
                results.append("final" if out and out[-1].WhichOneof("kind") == "final" else "no final")
            except grpc.RpcError as e:
                results.append(e.code())
        waited = time.time() - t0
    srv.stop()
    cut = results.count(grpc.StatusCode.UNAVAILABLE)
    print("  %d of 32 streams cut by the kill, the rest complete; all answered %.2f s after it" % (cut, waited))
    assert results[-1] == grpc.StatusCode.UNAVAILABLE and waited < 10, (results, waited)
    assert all(r in ("final", grpc.StatusCode.UNAVAILABLE) for r in results), results
    # The later --listen wins over the free port Server() picks: the same port again.
    again = Server("--model", MODEL, "--threads", "1", "--listen", "127.0.0.1:%d" % port)
    again.addr = "127.0.0.1:%d" % port
    try:
        still_serves(again)
    finally:
        again.stop()


def main():
    c = Checks()
    srv = Server("--model", MODEL, "--threads", "1")
    try:
        c.run("%d methods x %d malformed wires: INVALID_ARGUMENT 'malformed <Type>'" % (len(METHODS), len(MALFORMED)),
              malformed_everywhere, srv)
        c.run("empty requests and unknown fields get the API's answer", empty_and_unknown_fields, srv)
        c.run("the health service name is checked as text (NUL, invalid UTF-8, length)",
              health_service_name_is_text, srv)
        c.run("5 MiB messages: RESOURCE_EXHAUSTED on every method", oversized_messages, srv)
        c.run("cancelled streams free their slots", cancel_frees_the_slot, srv)
    finally:
        srv.stop()
    c.run("JWT on the wire: oversized, two headers, path kid, lower-case scheme", jwt_on_the_wire)
    c.run("kill -9 mid-stream: UNAVAILABLE at once; a restarted server serves", kill_9_mid_stream)
    c.finish()


main()
