"""The official `openai` Python SDK (from PyPI, installed by `make pydeps` into the venv
$CORVID_VENV, default ~/.cache/corvid/venv) against a real corvid-server's HTTP API:
chat and completions, streaming and not, the usage chunk, logprobs, models, and errors
surfacing as the SDK's own exception classes. Run by /usr/bin/python3 like every
integration test, it re-executes itself with the venv's python, which sees Debian's
grpcio too (--system-site-packages)."""
import os

from corvid_venv import need

openai = need("openai", "the openai SDK tests")

import json  # noqa: E402
import subprocess  # noqa: E402

from corvid_testlib import DATA, QWEN, ROOT, TMP, Checks, Server, free_port, have_model, proto_modules  # noqa: E402

STORIES = os.path.join(DATA, "models", "stories260K.gguf")
AUTH = os.path.join(ROOT, "tests", "data", "auth")


def start(model, *args):
    port = free_port()
    srv = Server("--model", model, "--http-listen", "127.0.0.1:%d" % port, *args)
    return srv, "http://127.0.0.1:%d/v1" % port


def completions(client):
    r = client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=12, temperature=0,
                                  logprobs=2)
    assert r.object == "text_completion" and r.model == "stories260K", r
    c = r.choices[0]
    assert c.finish_reason == "length" and c.text and r.usage.completion_tokens == 12, r
    assert len(c.logprobs.tokens) == 12 and all(len(t) <= 2 for t in c.logprobs.top_logprobs), c.logprobs
    assert "".join(c.logprobs.tokens) == c.text, (c.logprobs.tokens, c.text)
    chunks = list(client.completions.create(model="stories260K", prompt="Once upon a time", max_tokens=12,
                                            temperature=0, stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == c.text, (text, c.text)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12, chunks[-1]
    assert chunks[-2].choices[0].finish_reason == "length", chunks[-2]


def models(client):
    ids = [m.id for m in client.models.list()]
    assert "stories260K" in ids, ids
    assert client.models.retrieve("stories260K").id == "stories260K"
    try:
        client.models.retrieve("nope")
    except openai.NotFoundError as e:
        assert e.status_code == 404 and "not served" in str(e), e
    else:
        raise AssertionError("retrieve of an unknown model succeeded")


def errors(client):
    cases = [
        (openai.BadRequestError, dict(model="stories260K", prompt="x", n=2), "only 1 choice"),
        (openai.BadRequestError, dict(model="stories260K", prompt="x", temperature=5), "temperature"),
        (openai.BadRequestError, dict(model="stories260K", prompt="a\x00b"), "NUL"),
        (openai.NotFoundError, dict(model="gpt-4o", prompt="x"), "not served here"),
    ]
    for cls, kw, needle in cases:
        try:
            client.completions.create(max_tokens=2, **kw)
        except cls as e:
            assert needle in e.message, (needle, e.message)
            assert e.body and set(e.body) >= {"message", "type", "param", "code"}, e.body
        else:
            raise AssertionError("%s accepted" % kw)
    try:
        client.chat.completions.create(model="stories260K", messages=[{"role": "user", "content": "hi"}])
    except openai.BadRequestError as e:
        assert "chat template" in e.message, e.message
    else:
        raise AssertionError("chat on a model without a template accepted")


def chat(client):
    msgs = [{"role": "system", "content": "Answer with one word."},
            {"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model="qwen2.5-coder-0.5b-instruct-q4_k_m", messages=msgs, max_tokens=16,
                                       temperature=0, seed=7)
    m = r.choices[0].message
    assert r.object == "chat.completion" and m.role == "assistant" and "Paris" in m.content, r
    assert r.choices[0].finish_reason == "stop" and r.usage.prompt_tokens > 10, r
    stream = client.chat.completions.create(model="qwen2.5-coder-0.5b-instruct-q4_k_m", messages=msgs,
                                            max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == m.content, (text, m.content)
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens, chunks[-1]
    # Content as text parts, a tool turn, stop strings, penalties and logprobs are accepted.
    r = client.chat.completions.create(
        model="qwen2.5-coder-0.5b-instruct-q4_k_m", max_tokens=8, temperature=0, stop=["\n"], presence_penalty=0.5,
        frequency_penalty=0.5, logprobs=True, top_logprobs=2, user="tester",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi"}]},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "t1", "content": "42"}])
    lp = r.choices[0].logprobs.content
    assert lp and all(len(t.top_logprobs) == 2 for t in lp), lp


THINK = [{"role": "user", "content": 'Output the string "<think>hi</think>ok" and nothing else.'}]


def reasoning_split(client, grpc_addr):
    """Qwen2.5-Coder copies the think markers as asked (greedy): the text between them is
    reasoning_content over HTTP (whole and streamed) and Chunk.reasoning_text over gRPC;
    reasoning_format "none" / reasoning_inline keep it in the answer."""
    model = "qwen2.5-coder-0.5b-instruct-q4_k_m"
    m = client.chat.completions.create(model=model, messages=THINK, max_tokens=16, temperature=0).choices[0].message
    assert m.content == "ok" and m.model_extra.get("reasoning_content") == "hi", m
    chunks = list(client.chat.completions.create(model=model, messages=THINK, max_tokens=16, temperature=0,
                                                 stream=True))
    r = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices)
    t = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert (r, t) == ("hi", "ok"), (r, t)
    m = client.chat.completions.create(model=model, messages=THINK, max_tokens=16, temperature=0,
                                       extra_body={"reasoning_format": "none"}).choices[0].message
    assert m.content == "<think>hi</think>ok" and not m.model_extra.get("reasoning_content"), m
    import grpc
    pb = proto_modules()[0]
    with grpc.insecure_channel(grpc_addr) as ch:
        chat = ch.unary_stream("/corvid.v1.Inference/Chat", request_serializer=pb.ChatRequest.SerializeToString,
                               response_deserializer=pb.GenerateResponse.FromString)
        for inline, want in ((False, ("hi", "ok")), (True, ("", "<think>hi</think>ok"))):
            req = pb.ChatRequest(messages=[pb.ChatMessage(role="user", content=THINK[0]["content"])],
                                 sampling=pb.SamplingParams(max_tokens=16), reasoning_inline=inline)
            got = [m.chunk for m in chat(req, timeout=120) if m.WhichOneof("kind") == "chunk"]
            assert ("".join(c.reasoning_text for c in got), "".join(c.text for c in got)) == want, got


def auth_errors(base):
    c = openai.OpenAI(base_url=base, api_key="not-a-jwt", max_retries=0)
    try:
        c.completions.create(model="stories260K", prompt="x", max_tokens=2)
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e
    else:
        raise AssertionError("accepted without a valid token")


def main():
    print("openai SDK %s" % openai.__version__)
    c = Checks()
    srv, base = start(STORIES)
    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60)
    try:
        c.run("completions: whole, streamed, usage chunk, logprobs", completions, client)
        c.run("models.list / retrieve, NotFoundError", models, client)
        c.run("errors surface as BadRequestError / NotFoundError", errors, client)
    finally:
        srv.stop()
    keys = os.path.join(TMP, "keys")
    subprocess.run(["sh", os.path.join(AUTH, "gen.sh"), keys], check=True, capture_output=True)
    policy = os.path.join(TMP, "auth.json")
    with open(policy, "w") as f:
        json.dump({"jwt": {"keys": [{"kid": "hs", "alg": "HS256",
                                     "secret_file": os.path.join(keys, "jwt-hs256.secret")}]}}, f)
    srv, base = start(STORIES, "--auth-config", policy)
    try:
        c.run("a bad token is AuthenticationError", auth_errors, base)
    finally:
        srv.stop()
    if have_model(QWEN, "openai SDK chat on Qwen2.5-Coder 0.5B"):
        srv, base = start(QWEN)
        try:
            qc = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=120)
            c.run("Qwen2.5-Coder 0.5B: chat: whole and streamed agree, role first, usage, parts, tool turn", chat, qc)
            c.run("Qwen2.5-Coder 0.5B: reasoning_content / Chunk.reasoning_text split, and off", reasoning_split, qc, srv.addr)
        finally:
            srv.stop()
    c.finish()


if __name__ == "__main__":
    main()
