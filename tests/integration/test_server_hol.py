"""One large request must not stall corvid-server (issue 17, item 1), driven by Python
grpcio against the real server: max_prompt_bytes refuses an oversized prompt before any
tokenizing, naming the field and both numbers, and a prompt just under it is tokenized
off the completion-queue thread."""
import os

import grpc

from corvid_testlib import DATA, Checks, Server, proto_modules

pb, admin_pb, health_pb = proto_modules()
STORIES = os.path.join(DATA, "models", "stories260K.gguf")
STORIES_CTX = 128  # the context stories260K's file declares
BIG = 1 << 30      # client-side message limits: the server's are the ones under test


def channel(addr):
    return grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", BIG),
                                                ("grpc.max_send_message_length", BIG)])


def rpcs(ch):
    def un(path, req, resp):
        return ch.unary_unary(path, request_serializer=req.SerializeToString, response_deserializer=resp.FromString)

    def st(path, req):
        return ch.unary_stream(path, request_serializer=req.SerializeToString,
                               response_deserializer=pb.GenerateResponse.FromString)
    return {
        "generate": st("/corvid.v1.Inference/Generate", pb.GenerateRequest),
        "chat": st("/corvid.v1.Inference/Chat", pb.ChatRequest),
        "tokenize": un("/corvid.v1.Inference/Tokenize", pb.TokenizeRequest, pb.TokenizeResponse),
        "health": un("/grpc.health.v1.Health/Check", health_pb.HealthCheckRequest, health_pb.HealthCheckResponse),
    }


def text_of(n):
    """n bytes of story-like ASCII."""
    s = "Once upon a time there was a little girl named Lily. "
    return (s * (n // len(s) + 1))[:n]


def refused(fn, *needles):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        for n in needles:
            assert n in e.details(), (n, e.details())
        return
    raise AssertionError("accepted; expected INVALID_ARGUMENT with %s" % (needles,))


def default_bound_is_the_context(srv):
    """With no max_prompt_bytes, the bound is the context x 32 bytes (4096 for stories260K)."""
    limit = STORIES_CTX * 32
    with channel(srv.addr) as ch:
        r = rpcs(ch)
        over = text_of(limit + 1)
        refused(lambda: list(r["generate"](pb.GenerateRequest(prompt=over), timeout=30)),
                "prompt: %d bytes is over max_prompt_bytes (%d: the model's context of %d tokens x 32 bytes)"
                % (limit + 1, limit, STORIES_CTX))
        refused(lambda: r["tokenize"](pb.TokenizeRequest(text=over), timeout=30), "text: %d bytes" % (limit + 1),
                "(%d:" % limit)
        # Chat counts roles and contents together: 2 x "user" + two halves = limit + 1.
        half = (limit + 1 - 8) // 2
        msgs = [pb.ChatMessage(role="user", content=text_of(half)),
                pb.ChatMessage(role="user", content=text_of(limit + 1 - 8 - half))]
        refused(lambda: list(r["chat"](pb.ChatRequest(messages=msgs, chat_template="llama2"), timeout=30)),
                "messages: %d bytes is over max_prompt_bytes (%d" % (limit + 1, limit))
        # At the bound: tokenized (the ids come back), and Generate reaches the context check.
        at = text_of(limit)
        assert len(r["tokenize"](pb.TokenizeRequest(text=at), timeout=30).ids) > STORIES_CTX
        refused(lambda: list(r["generate"](pb.GenerateRequest(prompt=at), timeout=30)), "the context holds 128")


def configured_bound(srv, limit):
    with channel(srv.addr) as ch:
        r = rpcs(ch)
        over = text_of(limit + 100000)
        refused(lambda: list(r["generate"](pb.GenerateRequest(prompt=over), timeout=30)),
                "prompt: %d bytes is over max_prompt_bytes (%d)" % (len(over), limit))
        refused(lambda: r["tokenize"](pb.TokenizeRequest(text=over), timeout=30),
                "text: %d bytes is over max_prompt_bytes (%d)" % (len(over), limit))
        ids = r["tokenize"](pb.TokenizeRequest(text=text_of(limit)), timeout=60).ids
        assert len(ids) > limit // 8, len(ids)


def main():
    c = Checks()
    srv = Server("--model", STORIES, "--threads", "2")
    try:
        c.run("default max_prompt_bytes: the context x 32 bytes, field and both numbers named",
              default_bound_is_the_context, srv)
    finally:
        srv.stop()
    limit = 1 << 20
    srv = Server("--model", STORIES, "--threads", "2", "--max-prompt-bytes", str(limit))
    try:
        c.run("max_prompt_bytes 1 MiB: over it refused untokenized, at it tokenized", configured_bound, srv, limit)
    finally:
        srv.stop()
    c.finish()


main()
