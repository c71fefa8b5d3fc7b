"""Request validation through a real corvid-server (stories260K, grpcio client): every
text field (Generate prompt, Chat message content and system text, stop strings, the RAG
question, Tokenize text, and the Admin requests' version, uri, sha256 and traffic
weights) refuses the five malformed UTF-8 patterns and a NUL with
INVALID_ARGUMENT naming the field as the proto spells it and the byte offset; limits are
reported with the API's names and the values the client sent (unsigned ones unwrapped,
NaN as "not a number"); a Bearer header without a token says the token is missing."""
import json
import os
import subprocess

import grpc

from corvid_testlib import BIN, DATA, TMP, Checks, Server, proto_modules

pb, admin_pb, _ = proto_modules()
MODEL = os.path.join(DATA, "models", "stories260K.gguf")

# (name, bytes, offset of the first bad byte within them); each follows 3 valid bytes
# "ab\u00e9"-style text in the field, so the reported offset is PREFIX_LEN + offset.
PREFIX = "Hé ".encode()  # 4 bytes, one of them a 2-byte character
BAD = [
    ("lone continuation byte", b"x\x80y", 1),
    ("truncated sequence", b"\xe2\x82", 0),
    ("overlong encoding", b"\xc0\xaf", 0),
    ("surrogate", b"\xed\xa0\x80", 0),
    ("above U+10FFFF", b"\xf4\x90\x80\x80", 0),
    ("NUL", b"a\x00b", 1),
]


def raw_rpc(ch, method, stream):
    path = method if method.startswith("/") else "/corvid.v1.Inference/" + method
    return ch.unary_stream(path) if stream else ch.unary_unary(path)


def call(srv, method, stream, body, metadata=None):
    """Sends body (bytes) and returns (code, details); OK for a success."""
    with grpc.insecure_channel(srv.addr) as ch:
        try:
            r = raw_rpc(ch, method, stream)(body, timeout=20, metadata=metadata)
            if stream:
                list(r)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()


def with_bytes(msg, marker, bad):
    """msg serialized with the text marker (as long as bad) replaced by the raw bytes:
    Python's protobuf will not carry invalid UTF-8 in a string field, the wire does."""
    assert len(marker.encode()) == len(bad)
    wire = msg.SerializeToString()
    assert wire.count(marker.encode()) == 1
    return wire.replace(marker.encode(), bad)


def marker_for(bad):
    return "\x01" * len(bad)  # never in the prompts below


def cases():
    """(what, method, stream, build(marker) -> message, field name) for each text field."""
    sp = pb.SamplingParams
    return [
        ("Generate prompt", "Generate", True,
         lambda m: pb.GenerateRequest(prompt="Hé " + m, sampling=sp(max_tokens=2)), "prompt"),
        ("Chat user content", "Chat", True,
         lambda m: pb.ChatRequest(chat_template="chatml", sampling=sp(max_tokens=2), messages=[
             pb.ChatMessage(role="system", content="Be brief."),
             pb.ChatMessage(role="user", content="Hé " + m)]), "messages[1].content"),
        ("Chat system text", "Chat", True,
         lambda m: pb.ChatRequest(chat_template="chatml", sampling=sp(max_tokens=2), messages=[
             pb.ChatMessage(role="system", content="Hé " + m),
             pb.ChatMessage(role="user", content="Hi")]), "messages[0].content"),
        ("stop string", "Generate", True,
         lambda m: pb.GenerateRequest(prompt="Once", sampling=sp(max_tokens=2, stop=["ok", "Hé " + m])),
         "sampling.stop[1]"),
        ("RAG question (Generate)", "Generate", True,
         lambda m: pb.GenerateRequest(prompt="Hé " + m, rag=pb.RagOptions(enable=True)), "prompt"),
        ("RAG question (Chat)", "Chat", True,
         lambda m: pb.ChatRequest(chat_template="chatml", rag=pb.RagOptions(enable=True), messages=[
             pb.ChatMessage(role="user", content="Hé " + m)]), "messages[0].content"),
        ("Tokenize text", "Tokenize", False, lambda m: pb.TokenizeRequest(text="Hé " + m), "text"),
        ("Tokenize message", "Tokenize", False,
         lambda m: pb.TokenizeRequest(chat_template="chatml",
                                      messages=[pb.ChatMessage(role="user", content="Hé " + m)]),
         "messages[0].content"),
    ]


def text_fields_refuse_bad_text(srv):
    failures = []
    for what, method, stream, build, field in cases():
        # The same request with valid text is served (RAG ones only get past validation).
        code, details = call(srv, method, stream, build("ok").SerializeToString())
        if code != grpc.StatusCode.OK and "rag" not in what.lower():
            failures.append((what, "valid text", code, details))
        for name, bad, off in BAD:
            marker = marker_for(bad)
            code, details = call(srv, method, stream, with_bytes(build(marker), marker, bad))
            want = "byte %d" % (len(PREFIX) + off)
            kind = "NUL" if name == "NUL" else "not valid UTF-8"
            if code != grpc.StatusCode.INVALID_ARGUMENT or not details.startswith(field + ":") \
                    or want not in details or kind not in details:
                failures.append((what, name, code, details))
    assert not failures, "\n".join(map(str, failures))


def nul_set_from_python_is_refused(srv):
    """A NUL that Python's protobuf itself carries (no byte surgery): not cut, refused."""
    code, details = call(srv, "Generate", True, pb.GenerateRequest(prompt="Once\x00 upon").SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("prompt:") and "byte 4" in details, \
        (code, details)
    code, details = call(srv, "Tokenize", False, pb.TokenizeRequest(text="\x00").SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("text:") and "byte 0" in details, \
        (code, details)


def other_text_fields_are_checked(srv):
    """The check walks every string field: request_id, model, rag.knowledge_base too."""
    for msg, field in [(pb.GenerateRequest(prompt="Once", request_id="r\x00"), "request_id"),
                       (pb.GenerateRequest(prompt="Once", model="m\x00"), "model"),
                       (pb.GenerateRequest(prompt="Once", rag=pb.RagOptions(enable=True, sources=["a", "\x00"])),
                        "rag.sources[1]")]:
        code, details = call(srv, "Generate", True, msg.SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field + ":"), (field, code, details)


def admin_text_fields_refuse_bad_text(srv):
    """Admin requests go through the same unpack and check: version, uri, sha256 and
    weights[i].version, each with invalid UTF-8 and NUL, before the router sees them."""
    A = "/corvid.v1.Admin/"
    fields = [("LoadModel", lambda m: admin_pb.LoadModelRequest(version="Hé " + m, uri="x.gguf"), "version"),
              ("LoadModel", lambda m: admin_pb.LoadModelRequest(version="v", uri="Hé " + m), "uri"),
              ("LoadModel", lambda m: admin_pb.LoadModelRequest(version="v", uri="x", sha256="Hé " + m), "sha256"),
              ("UnloadModel", lambda m: admin_pb.UnloadModelRequest(version="Hé " + m), "version"),
              ("SetTraffic", lambda m: admin_pb.SetTrafficRequest(weights=[
                  admin_pb.TrafficWeight(version="stories260K", weight=1),
                  admin_pb.TrafficWeight(version="Hé " + m, weight=1)]), "weights[1].version")]
    failures = []
    for method, build, field in fields:
        for name, bad, off in BAD:
            marker = marker_for(bad)
            code, details = call(srv, A + method, False, with_bytes(build(marker), marker, bad))
            if code != grpc.StatusCode.INVALID_ARGUMENT or not details.startswith(field + ":") or \
                    "byte %d" % (len(PREFIX) + off) not in details:
                failures.append((method, field, name, code, details))
    code, details = call(srv, A + "LoadModel", False, b"\x0a\xff")  # field 1 with a length past the end
    if code != grpc.StatusCode.INVALID_ARGUMENT or details != "malformed LoadModelRequest":
        failures.append(("LoadModel", "truncated wire", code, details))
    assert not failures, "\n".join(map(str, failures))


def limits_use_api_names_and_sent_values(srv):
    sp = pb.SamplingParams
    for sampling, needles in [
        (sp(repetition_window=2**32 - 1), ["repetition_window", "4294967295"]),
        (sp(repetition_window=2**31), ["repetition_window", "2147483648"]),
        (sp(logprobs=2**32 - 1), ["logprobs", "4294967295"]),
        (sp(repetition_penalty=-1), ["repetition_penalty"]),
        (sp(top_p=float("nan")), ["top_p", "not a number"]),
        (sp(temperature=float("inf")), ["temperature"]),
    ]:
        code, details = call(srv, "Generate", True,
                             pb.GenerateRequest(prompt="Once", sampling=sampling).SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (sampling, code, details)
        for n in needles:
            assert n in details, (n, details)
        for internal in ("repeat_last_n", "repeat_penalty", "top_logprobs"):
            assert internal not in details, (internal, details)
        if sampling.repetition_window or sampling.logprobs:
            assert "-1" not in details and "2147483647" not in details, details  # not wrapped, not clamped


def chat_roles_named_as_sent(srv, rag):
    """messages[i].role with the client's index, RAG requests (which add a system message
    of their own) included; an empty chat names messages."""
    for server, opts in ((srv, None), (rag, pb.RagOptions(enable=True))):
        msgs = [pb.ChatMessage(role="user", content="Hi"), pb.ChatMessage(role="tool", content="x")]
        code, details = call(server, "Chat", True,
                             pb.ChatRequest(chat_template="chatml", messages=msgs, rag=opts).SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("messages[1].role:") \
            and "'tool'" in details, (opts, code, details)
        msgs = [pb.ChatMessage(role="user", content="Hi"), pb.ChatMessage(role="user", content="again")]
        code, details = call(server, "Chat", True,
                             pb.ChatRequest(chat_template="gemma", messages=msgs, rag=opts).SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("messages[1].role:"), \
            (opts, code, details)
    code, details = call(srv, "Chat", True, pb.ChatRequest(chat_template="chatml").SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("messages:"), (code, details)
    code, details = call(srv, "Chat", True, pb.ChatRequest(chat_template="vicuna", messages=[
        pb.ChatMessage(role="user", content="Hi")]).SerializeToString())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("chat_template: unknown chat template"), \
        (code, details)


def rag_min_score_not_a_number(rag_srv):
    for v, needle in [(float("nan"), "not a number"), (float("inf"), "not a number"),
                      (float("-inf"), "not a number"), (-1.0, "is negative")]:
        code, details = call(rag_srv, "Generate", True,
                             pb.GenerateRequest(prompt="mascot", rag=pb.RagOptions(enable=True, min_score=v))
                             .SerializeToString())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "rag.min_score" in details and needle in details, \
            (v, code, details)


def rag_question_checked_with_kb(rag_srv):
    """With a knowledge base configured, the RAG question is refused before retrieval."""
    for build, field in [(lambda m: pb.GenerateRequest(prompt="Hé " + m, rag=pb.RagOptions(enable=True)), "prompt"),
                         (lambda m: pb.ChatRequest(chat_template="chatml", rag=pb.RagOptions(enable=True), messages=[
                             pb.ChatMessage(role="user", content="Hé " + m)]), "messages[0].content")]:
        for name, bad, off in BAD:
            marker = marker_for(bad)
            method = "Generate" if field == "prompt" else "Chat"
            code, details = call(rag_srv, method, True, with_bytes(build(marker), marker, bad))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field + ":") \
                and "byte %d" % (len(PREFIX) + off) in details, (name, code, details)
    code, _ = call(rag_srv, "Generate", True,
                   pb.GenerateRequest(prompt="mascot", rag=pb.RagOptions(enable=True)).SerializeToString())
    assert code == grpc.StatusCode.OK, code


def bearer_without_token():
    secret, policy = os.path.join(TMP, "hs256.secret"), os.path.join(TMP, "policy.json")
    with open(secret, "w") as f:
        f.write("0123456789abcdef0123456789abcdef0123456789abcdef\n")
    os.chmod(secret, 0o600)
    with open(policy, "w") as f:
        json.dump({"jwt": {"keys": [{"kid": "hs", "alg": "HS256", "secret_file": secret}],
                           "issuer": "https://idp.test", "audience": "corvid"}}, f)
    srv = Server("--model", MODEL, "--auth-config", policy)
    try:
        body = pb.TokenizeRequest(text="hi").SerializeToString()
        for header in ("Bearer", "Bearer ", "bearer   "):
            code, details = call(srv, "Tokenize", False, body, metadata=[("authorization", header)])
            assert code == grpc.StatusCode.UNAUTHENTICATED and "token is missing" in details \
                and "not supported" not in details, (header, code, details)
        code, details = call(srv, "Tokenize", False, body, metadata=[("authorization", "Basic abc")])
        assert code == grpc.StatusCode.UNAUTHENTICATED and "'Basic' is not supported" in details, details
    finally:
        srv.stop()


def build_kb():
    src = os.path.join(TMP, "kb.jsonl")
    with open(src, "w", encoding="utf-8") as f:
        f.write(json.dumps({"id": "mascot", "title": "Mascot",
                            "text": "The corvid mascot is a raven named Quill."}) + "\n")
    out = os.path.join(TMP, "kb.cvidx")
    subprocess.run([os.path.join(BIN, "corvid-index"), "build", src, "-o", out], check=True, capture_output=True)
    return out


def main():
    c = Checks()
    srv = Server("--model", MODEL, "--threads", "1")
    try:
        c.run("every text field: 5 malformed patterns and NUL named with field and offset",
              text_fields_refuse_bad_text, srv)
        c.run("a NUL from the client is refused, not cut", nul_set_from_python_is_refused, srv)
        c.run("request_id, model, rag.sources are checked too", other_text_fields_are_checked, srv)
        c.run("Admin version, uri, sha256, weights[i].version: same check", admin_text_fields_refuse_bad_text, srv)
        c.run("limits: API names, unwrapped unsigned values, NaN", limits_use_api_names_and_sent_values, srv)
        rag = Server("--model", MODEL, "--threads", "1", "--rag-kb", "docs=" + build_kb())
        try:
            c.run("rag.min_score NaN/Inf: not a number", rag_min_score_not_a_number, rag)
            c.run("RAG question with a knowledge base: refused before retrieval", rag_question_checked_with_kb, rag)
            c.run("chat roles named messages[i].role as sent, with and without RAG", chat_roles_named_as_sent, srv,
                  rag)
        finally:
            rag.stop()
    finally:
        srv.stop()
    c.run("Bearer without a token: the token is missing", bearer_without_token)
    c.finish()


main()
