"""corvid-server's gRPC transport and health service, driven by Python grpcio (an
independent client): Check, Watch across a drain, unknown methods, malformed bytes,
concurrency and SIGTERM."""
import threading

import grpc

from corvid_testlib import Checks, Server, proto_modules

_, _, health_pb2 = proto_modules()
Req = health_pb2.HealthCheckRequest
Resp = health_pb2.HealthCheckResponse


def check_rpc(ch):
    return ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=Req.SerializeToString,
                          response_deserializer=Resp.FromString)


def check_statuses(srv):
    with grpc.insecure_channel(srv.addr) as ch:
        check = check_rpc(ch)
        assert check(Req(service=""), timeout=5).status == Resp.SERVING
        # No model is wired in yet: the inference service must not claim to serve.
        assert check(Req(service="corvid.v1.Inference"), timeout=5).status == Resp.NOT_SERVING
        try:
            check(Req(service="no.such.Service"), timeout=5)
            raise AssertionError("unknown service answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()


def unknown_method(srv):
    with grpc.insecure_channel(srv.addr) as ch:
        m = ch.unary_unary("/corvid.v1.Nope/Nothing")
        try:
            m(b"", timeout=5)
            raise AssertionError("unknown method answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e.code()
            assert "/corvid.v1.Nope/Nothing" in e.details(), e.details()


def malformed_request(srv):
    with grpc.insecure_channel(srv.addr) as ch:
        raw = ch.unary_unary("/grpc.health.v1.Health/Check")
        try:
            raw(b"\xff\xff\xff\xff\x0f\x0a", timeout=5)  # truncated varint, then a bad tag
            raise AssertionError("malformed bytes accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()


def concurrent_checks(srv):
    errors = []

    def worker():
        try:
            with grpc.insecure_channel(srv.addr) as ch:
                check = check_rpc(ch)
                for _ in range(20):
                    assert check(Req(service=""), timeout=5).status == Resp.SERVING
        except Exception as e:  # collected and asserted below
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]


def watch_then_drain(srv):
    ch = grpc.insecure_channel(srv.addr)
    watch = ch.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=Req.SerializeToString,
                            response_deserializer=Resp.FromString)
    stream = watch(Req(service=""), timeout=20)
    assert next(stream).status == Resp.SERVING
    unknown = watch(Req(service="no.such.Service"), timeout=20)
    assert next(unknown).status == Resp.SERVICE_UNKNOWN
    unknown.cancel()
    srv.terminate()
    # The drain must be visible to watchers before the process goes away.
    assert next(stream).status == Resp.NOT_SERVING
    assert srv.wait(timeout=15) == 0, srv.output()
    assert '"stopped"' in srv.output()
    ch.close()


def bad_flags():
    import subprocess
    import os
    from corvid_testlib import BIN
    r = subprocess.run([os.path.join(BIN, "corvid-server"), "--max-running", "0"], capture_output=True, text=True)
    assert r.returncode == 1 and "--max-running: 0 is outside [1, 4096]" in r.stderr, r.stderr
    r = subprocess.run([os.path.join(BIN, "corvid-server"), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr and "usage:" in r.stderr, r.stderr


def main():
    c = Checks()
    srv = Server()
    try:
        c.run("health check statuses", check_statuses, srv)
        c.run("unknown method is UNIMPLEMENTED", unknown_method, srv)
        c.run("malformed request is INVALID_ARGUMENT", malformed_request, srv)
        c.run("16 clients x 20 checks", concurrent_checks, srv)
        c.run("watch sees NOT_SERVING on SIGTERM, exit 0", watch_then_drain, srv)
    finally:
        srv.stop()
    c.run("bad flags exit 1 with a message", bad_flags)
    c.finish()


main()
