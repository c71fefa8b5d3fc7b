"""Probe suite (issue 17.7): sampling abuse against a real corvid-server (stories260K,
grpcio). Every SamplingParams field gets NaN, infinities, negatives, zero and huge
values, on Generate and Chat: a refused one is INVALID_ARGUMENT before any work with a
message that starts with the field as the API spells it ("sampling.top_p ..."); an
accepted one must stream to a normal end (STOP or LENGTH, never ERROR) within the
context. Seeds at the ends of uint64 give repeatable streams. The uint32 limits that
test_server_validation.py already covers (repetition_window 2^32-1 and 2^31, logprobs
2^32-1, NaN top_p, Inf temperature) are not repeated here."""
import os

import grpc

from corvid_testlib import DATA, Checks, Server, proto_modules

pb, _, _ = proto_modules()
MODEL = os.path.join(DATA, "models", "stories260K.gguf")
CTX = 128  # stories260K's context
NAN, INF = float("nan"), float("inf")
INVALID = grpc.StatusCode.INVALID_ARGUMENT

# (fields, the field the refusal names); None: accepted.
CASES = [
    (dict(temperature=NAN), "sampling.temperature"),
    (dict(temperature=-INF), "sampling.temperature"),
    (dict(temperature=-1.0), "sampling.temperature"),
    (dict(temperature=-1e-45), "sampling.temperature"),
    (dict(temperature=1e-38), None),
    (dict(temperature=1e30), None),
    (dict(temperature=3.4e38), None),
    (dict(top_p=INF), "sampling.top_p"),
    (dict(top_p=-0.5), "sampling.top_p"),
    (dict(top_p=1.5), "sampling.top_p"),
    (dict(top_p=1e-30, temperature=1.0), None),
    (dict(top_k=-1), "sampling.top_k"),
    (dict(top_k=-(2 ** 31)), "sampling.top_k"),
    (dict(top_k=1, temperature=1.0), None),
    (dict(top_k=2 ** 31 - 1, temperature=1.0), None),
    (dict(min_p=NAN), "sampling.min_p"),
    (dict(min_p=-0.1), "sampling.min_p"),
    (dict(min_p=1.1), "sampling.min_p"),
    (dict(min_p=1.0, temperature=1.0), None),
    (dict(repetition_penalty=NAN), "sampling.repetition_penalty"),
    (dict(repetition_penalty=-INF), "sampling.repetition_penalty"),
    (dict(repetition_penalty=-1.0), "sampling.repetition_penalty"),
    (dict(repetition_penalty=1e30), None),
    (dict(repetition_penalty=1e-30), None),
    (dict(repetition_window=2 ** 20 + 1), "sampling.repetition_window"),
    (dict(repetition_window=2 ** 20, repetition_penalty=1.3), None),
    (dict(max_tokens=0), None),
    (dict(max_tokens=2 ** 32 - 1), None),
    (dict(max_tokens=2 ** 32 - 1, ignore_eos=True, temperature=1.0), None),
    (dict(logprobs=21), "sampling.logprobs"),
    (dict(logprobs=20, max_tokens=3), None),
    (dict(stop=[""]), "sampling.stop[0]"),
    (dict(stop=["ok", ""]), "sampling.stop[1]"),
    (dict(stop=["x" * 257]), "sampling.stop[0]"),
    (dict(stop=["x" * (1 << 20)]), "sampling.stop[0]"),
    (dict(stop=["a"] * 17), "sampling.stop"),
    (dict(stop=["a"] * 10000), "sampling.stop"),
    (dict(stop=["x" * 256] * 16), None),
    (dict(stop=["\u00e9", "\U0001f600", " "]), None),
]


def channel(srv):
    return grpc.insecure_channel(srv.addr, options=[("grpc.max_send_message_length", 64 << 20)])


def stream(ch, method, sampling):
    if method == "Generate":
        req, cls = pb.GenerateRequest(prompt="Once upon a time", sampling=sampling), pb.GenerateRequest
    else:
        req = pb.ChatRequest(chat_template="chatml", sampling=sampling,
                             messages=[pb.ChatMessage(role="user", content="Tell me a story")])
        cls = pb.ChatRequest
    rpc = ch.unary_stream("/corvid.v1.Inference/" + method, request_serializer=cls.SerializeToString,
                          response_deserializer=pb.GenerateResponse.FromString)
    return list(rpc(req, timeout=60))


def abuse_is_refused_or_served(srv):
    failures = []
    with channel(srv) as ch:
        for fields, field in CASES:
            for method in ("Generate", "Chat"):
                shown = {k: (v if not isinstance(v, list) else "%d strings" % len(v)) for k, v in fields.items()}
                what = (method, shown)
                try:
                    out = stream(ch, method, pb.SamplingParams(**fields))
                except grpc.RpcError as e:
                    named = e.details().startswith(field + " ") or e.details().startswith(field + ":") if field else False
                    if e.code() != INVALID or not named:
                        failures.append((what, e.code(), e.details()[:200]))
                    continue
                if field is not None:
                    failures.append((what, "accepted", "want INVALID_ARGUMENT naming " + field))
                    continue
                final = out[-1].final
                done = final.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
                n = final.usage.completion_tokens
                if not done or final.error or not 0 < n <= CTX or final.usage.prompt_tokens + n > CTX:
                    failures.append((what, final.finish_reason, n, final.error))
                if fields.get("logprobs"):
                    lp = [x for m in out if m.WhichOneof("kind") == "chunk" for x in m.chunk.logprobs]
                    if len(lp) != n or any(len(x.top) != fields["logprobs"] for x in lp):
                        failures.append((what, "logprobs", [len(x.top) for x in lp]))
    assert not failures, "\n".join(map(str, failures))


def seeds_repeat(srv):
    """The same seed gives the same tokens, at 0 and at 2^64-1; the Final reports it."""
    with channel(srv) as ch:
        for seed in (0, 1, 2 ** 64 - 1):
            runs = []
            for _ in range(2):
                sp = pb.SamplingParams(temperature=1.5, max_tokens=24, seed=pb.UInt64Value(value=seed))
                out = stream(ch, "Generate", sp)
                assert out[-1].final.seed == seed, (seed, out[-1].final.seed)
                runs.append([i for m in out if m.WhichOneof("kind") == "chunk" for i in m.chunk.token_ids])
            assert runs[0] == runs[1] and runs[0], (seed, runs)


def main():
    c = Checks()
    srv = Server("--model", MODEL, "--threads", "1")
    try:
        c.run("%d sampling cases x Generate and Chat: INVALID_ARGUMENT naming the field, or a normal end"
              % len(CASES), abuse_is_refused_or_served, srv)
        c.run("seeds 0, 1 and 2^64-1 repeat their streams", seeds_repeat, srv)
    finally:
        srv.stop()
    c.finish()


main()
