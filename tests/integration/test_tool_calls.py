"""Tool calling end to end on the real Qwen2.5-Coder-0.5B-Instruct (its GGUF's own
template writes Hermes <tool_call> JSON): the official `openai` SDK (from the venv, as
test_http_openai_sdk.py) runs a two-tool conversation, the call, the tool's result and
the final answer, whole and streamed (the call's deltas put together by the SDK's own
types; the arguments come in pieces as the model writes them, also checked as raw SSE), tool_choice none and a named function; grpcio runs the same over Chat
(Chunk.tool_calls, FINISH_REASON_TOOL_CALLS). Greedy decoding, so the whole and
streamed answers must agree exactly. /metrics counts each answer under its finish
reason, tool_calls included (corvid_finish_reasons_total)."""
from corvid_venv import need

openai = need("openai", "the tool-calling tests")

import json  # noqa: E402
import re  # noqa: E402
import urllib.request  # noqa: E402

from corvid_testlib import QWEN, Checks, Server, free_port, have_model, proto_modules  # noqa: E402

MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                       "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Get the current local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]
ASK = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
RESULT = '{"city": "Paris", "temperature_c": 18, "sky": "sunny"}'


def create(client, max_tokens=48, **kw):
    return client.chat.completions.create(model=MODEL, temperature=0, seed=1, max_tokens=max_tokens, **kw)


def call_whole_and_streamed(client):
    """The first turn: a get_weather call for Paris, no content, finish tool_calls;
    streamed, the SDK's deltas add up to the same call."""
    r = create(client, messages=ASK, tools=TOOLS)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls", r
    calls = ch.message.tool_calls
    assert calls and len(calls) == 1 and calls[0].type == "function", ch.message
    assert calls[0].function.name == "get_weather", calls
    assert json.loads(calls[0].function.arguments).get("city") == "Paris", calls
    assert calls[0].id.startswith("call_") and not ch.message.content, ch.message
    chunks = list(create(client, messages=ASK, tools=TOOLS, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].id and deltas[0].type == "function" and deltas[0].function.name == "get_weather", deltas
    assert deltas[0].function.arguments == "" and not any(d.id or d.function.name for d in deltas[1:]), deltas
    # the arguments stream as the model writes them: a piece per token or so
    pieces = [d.function.arguments for d in deltas[1:]]
    assert all(d.index == 0 for d in deltas) and len(pieces) >= 4 and all(pieces), deltas
    args = "".join(pieces)
    assert args == calls[0].function.arguments, (args, calls[0].function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls", chunks[-1]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks
    return calls[0]


def raw_sse(base):
    """The same stream as raw SSE events: the first tool_calls delta is id, type, name
    and empty arguments; the argument pieces that follow join to the whole answer's."""
    body = {"model": MODEL, "messages": ASK, "tools": TOOLS, "temperature": 0, "seed": 1, "max_tokens": 48}
    def post(extra):
        req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(dict(body, **extra)).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.read().decode()
    whole = json.loads(post({}))["choices"][0]["message"]["tool_calls"][0]
    events = [line[6:] for line in post({"stream": True}).split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    deltas = [d for e in events[:-1] for c in json.loads(e)["choices"] for d in c["delta"].get("tool_calls", [])]
    head = dict(deltas[0])
    assert head.pop("id").startswith("call_") and head == {
        "index": 0, "type": "function", "function": {"name": "get_weather", "arguments": ""}}, deltas[0]
    assert all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in deltas[1:]), deltas
    assert len(deltas) >= 5, deltas
    assert "".join(d["function"]["arguments"] for d in deltas[1:]) == whole["function"]["arguments"], deltas


def conversation(client):
    """Call, the tool's result, the final answer, which carries the result's values. The
    answer is asked with tool_choice none: with tools offered, this 0.5B model only ever
    calls tools again after a result (greedy, eight phrasings tried)."""
    call = call_whole_and_streamed(client)
    msgs = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "name": "get_weather", "content": RESULT},
    ]
    r = create(client, messages=msgs, tools=TOOLS, tool_choice="none")
    ch = r.choices[0]
    assert ch.finish_reason == "stop" and not ch.message.tool_calls, r
    assert "18" in ch.message.content and "sunny" in ch.message.content.lower(), ch.message.content


def choices(client):
    """tool_choice none: no tools offered, an answer in words; a named function: that
    tool's call (constrained: unasked, this model writes it in a ```json fence with the
    arguments), one only; one not among the tools: BadRequestError naming tool_choice."""
    r = create(client, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=8)
    assert not r.choices[0].message.tool_calls, r
    assert r.choices[0].message.content, r
    ask_time = [{"role": "user", "content": "What time is it in Tokyo?"}]
    r = create(client, messages=ask_time, tools=TOOLS,
               tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False)
    calls = r.choices[0].message.tool_calls
    assert calls and [c.function.name for c in calls] == ["get_time"], r
    # required on a request no tool fits (auto: a haiku in words): still a call, with
    # arguments that hold the tool's parameters
    haiku = [{"role": "user", "content": "Write a haiku about the sea."}]
    r = create(client, messages=haiku, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and calls, r
    assert all(c.function.name in ("get_weather", "get_time") and "city" in json.loads(c.function.arguments)
               for c in calls), calls
    try:
        create(client, messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    except openai.BadRequestError as e:
        assert e.body["param"] == "tool_choice" and "no tool named 'nope'" in e.message, e.body
    else:
        raise AssertionError("a tool_choice naming no tool was accepted")
    try:
        create(client, messages=ASK, tools=[{"type": "function", "function": {"description": "x"}}])
    except openai.BadRequestError as e:
        assert e.body["param"] == "tools[0].function.name", e.body
    else:
        raise AssertionError("a tool without a name was accepted")


def finished(metrics_url, reason):
    """corvid_finish_reasons_total of gRPC requests that ended with reason."""
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^corvid_finish_reasons_total\{version="[^"]*",protocol="grpc",reason="%s"\} (\d+)$' % reason,
                  text, re.M)
    assert m, text
    return int(m.group(1))


def grpc_chat(addr, metrics_url):
    """The same conversation over gRPC, the call required (so constrained): the call in
    Chunk.tool_calls, FINISH_REASON_TOOL_CALLS; the result as a tool message, then the
    answer."""
    import grpc
    pb = proto_modules()[0]
    with grpc.insecure_channel(addr) as ch:
        chat = ch.unary_stream("/corvid.v1.Inference/Chat", request_serializer=pb.ChatRequest.SerializeToString,
                               response_deserializer=pb.GenerateResponse.FromString)
        msgs = [pb.ChatMessage(role="user", content=ASK[0]["content"])]
        req = pb.ChatRequest(messages=msgs, tools=json.dumps(TOOLS), tool_choice="required",
                             sampling=pb.SamplingParams(max_tokens=48))
        before = {r: finished(metrics_url, r) for r in ("tool_calls", "stop")}
        out = list(chat(req, timeout=120))
        deltas = [c for m in out if m.WhichOneof("kind") == "chunk" for c in m.chunk.tool_calls]
        # deltas as OpenAI's: the first with id and name, then the arguments in pieces
        assert deltas and deltas[0].name == "get_weather" and deltas[0].id.startswith("call_"), deltas
        assert all(d.index == 0 and not d.id and not d.name for d in deltas[1:]) and len(deltas) >= 3, deltas
        calls = [pb.ToolCall(index=0, id=deltas[0].id, name=deltas[0].name,
                             arguments="".join(d.arguments for d in deltas))]
        assert json.loads(calls[0].arguments)["city"] == "Paris", calls
        assert out[-1].final.finish_reason == pb.FINISH_REASON_TOOL_CALLS, out[-1]
        hf_calls = [{"id": calls[0].id, "type": "function",
                     "function": {"name": calls[0].name, "arguments": json.loads(calls[0].arguments)}}]
        msgs += [pb.ChatMessage(role="assistant", tool_calls=json.dumps(hf_calls)),
                 pb.ChatMessage(role="tool", content=RESULT, tool_call_id=calls[0].id, name="get_weather")]
        req = pb.ChatRequest(messages=msgs, tools=json.dumps(TOOLS), tool_choice="none",
                             sampling=pb.SamplingParams(max_tokens=48))
        out = list(chat(req, timeout=120))
        text = "".join(m.chunk.text for m in out if m.WhichOneof("kind") == "chunk")
        assert out[-1].final.finish_reason == pb.FINISH_REASON_STOP and "18" in text, (text, out[-1])
        after = {r: finished(metrics_url, r) for r in ("tool_calls", "stop")}
        assert after == {"tool_calls": before["tool_calls"] + 1, "stop": before["stop"] + 1}, (before, after)
        req = pb.ChatRequest(messages=msgs[:1], tools=json.dumps(TOOLS), tool_choice="sometimes")
        try:
            list(chat(req, timeout=60))
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "tool_choice" in e.details(), e
        else:
            raise AssertionError("tool_choice 'sometimes' was accepted")


def main():
    print("openai SDK %s" % openai.__version__)
    c = Checks()
    if have_model(QWEN, "tool calling on Qwen2.5-Coder 0.5B"):
        port = free_port()
        mport = free_port()
        srv = Server("--model", QWEN, "--http-listen", "127.0.0.1:%d" % port,
                     "--metrics-listen", "127.0.0.1:%d" % mport)
        try:
            client = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % port, api_key="unused", max_retries=0,
                                   timeout=120)
            c.run("two tools: call (whole = streamed), result, answer", conversation, client)
            c.run("raw SSE: head delta, then argument pieces", raw_sse, "http://127.0.0.1:%d" % port)
            c.run("tool_choice none / named function / refusals", choices, client)
            c.run("gRPC Chat: Chunk.tool_calls, FINISH_REASON_TOOL_CALLS, tool message", grpc_chat, srv.addr,
                  "http://127.0.0.1:%d/metrics" % mport)
        finally:
            srv.stop()
    c.finish()


if __name__ == "__main__":
    main()
