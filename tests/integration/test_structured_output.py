"""Constrained decoding through a real corvid-server with the real Qwen2.5-Coder-0.5B
model: OpenAI response_format json_schema and json_object on /v1/chat/completions
(whole and streamed), a raw GBNF grammar (corvid.grammar) on /v1/completions, the same
through gRPC SamplingParams (json_schema, grammar), and refusals that name the schema
keyword or the grammar's line (HTTP 400 with param, gRPC INVALID_ARGUMENT).

Outputs are sampled at temperature 1.0 and validated with Python's jsonschema (a real
validation against the schema, not a parse). A few generations only: the 200-generation
measurement is bench/structured-output.py."""
import http.client
import json
import os

import grpc
import jsonschema

from corvid_testlib import QWEN, Checks, Server, expect_status, free_port, have_model, proto_modules

pb = proto_modules()[0]

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "role": {"enum": ["engineer", "artist", "pilot"]},
        "address": {"type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 30}, "zip": {"type": "string",
                                                                                        "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "role", "address", "skills"],
    "additionalProperties": False,
}
PROMPT = [{"role": "system", "content": "You answer with JSON only."},
          {"role": "user", "content": "Describe a fictional person: name, age, role, address and skills."}]


class Api:
    def __init__(self):
        self.http_port = free_port()
        self.srv = Server("--model", QWEN, "--http-listen", "127.0.0.1:%d" % self.http_port)

    def post(self, path, body, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        raw = r.read()
        c.close()
        return r.status, json.loads(raw) if raw.startswith(b"{") else raw

    def sse(self, path, body, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        c.request("POST", path, body=json.dumps(dict(body, stream=True)), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, (r.status, r.read())
        events = [json.loads(line[6:]) for line in (raw.decode().strip() for raw in r)
                  if line.startswith("data: ") and line != "data: [DONE]"]
        c.close()
        return events

    def stop(self):
        self.srv.stop()


def chat_json_schema(api):
    """Two samples at temperature 1.0 with different seeds: each validates and ends with
    finish_reason stop (the end token came only once the object was complete)."""
    for seed in (1, 2):
        st, body = api.post("/v1/chat/completions", {
            "messages": PROMPT, "temperature": 1.0, "seed": seed, "max_tokens": 200,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "person", "schema": PERSON, "strict": True}}})
        assert st == 200, body
        choice = body["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        jsonschema.validate(json.loads(choice["message"]["content"]), PERSON)


def chat_json_schema_streamed(api):
    events = api.sse("/v1/chat/completions", {
        "messages": PROMPT, "temperature": 1.0, "seed": 7, "max_tokens": 200,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}})
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    assert events[-1]["choices"][0]["finish_reason"] == "stop", events[-1]
    jsonschema.validate(json.loads(text), PERSON)


def chat_json_object(api):
    st, body = api.post("/v1/chat/completions", {
        "messages": [{"role": "user", "content": "List three colours."}], "temperature": 1.0, "seed": 5,
        "max_tokens": 120, "response_format": {"type": "json_object"}})
    assert st == 200, body
    assert body["choices"][0]["finish_reason"] == "stop", body
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict), body


def completion_gbnf(api):
    """A raw grammar on /v1/completions: the text is one of its sentences."""
    grammar = 'root ::= ("yes" | "no") ", because " [a-z ]{1,30} "."\n'
    for seed in (1, 2):
        st, body = api.post("/v1/completions", {"prompt": "Is the sky blue? Answer:", "temperature": 1.0,
                                                "seed": seed, "max_tokens": 60, "corvid": {"grammar": grammar}})
        assert st == 200, body
        text = body["choices"][0]["text"]
        head, _, rest = text.partition(", because ")
        assert head in ("yes", "no") and rest.endswith(".") and 1 <= len(rest) - 1 <= 30, text
        assert all(ch.islower() or ch == " " for ch in rest[:-1]), text
        assert body["choices"][0]["finish_reason"] == "stop", body


def http_refusals(api):
    cases = [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 3}}},
         "response_format.json_schema.schema", "minimum is not supported"),
        ({"type": "json_schema", "json_schema": {"schema": {"properties": {"a": {"oneOf": [{}]}}}}},
         "response_format.json_schema.schema", "oneOf is not supported at /properties/a"),
        ({"type": "yaml"}, "response_format.type", "not text, json_object or json_schema"),
    ]
    for fmt, param, needle in cases:
        st, body = api.post("/v1/chat/completions", {"messages": PROMPT, "response_format": fmt})
        assert st == 400 and body["error"]["param"] == param and needle in body["error"]["message"], body
    st, body = api.post("/v1/completions", {"prompt": "x", "corvid": {"grammar": "root ::= \"a\"\nb ::= c\n"}})
    assert st == 400 and body["error"]["param"] == "corvid.grammar", body
    assert "line 2 column 7: rule 'c' is used but not defined" in body["error"]["message"], body
    st, body = api.post("/v1/completions", {"prompt": "x", "corvid": {"grammar": "root ::= \"a\""},
                                            "response_format": {"type": "json_object"}})
    assert st == 400 and "not both" in body["error"]["message"], body


def generate_rpc(ch):
    return ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                           response_deserializer=pb.GenerateResponse.FromString)


def grpc_constraints(api):
    with grpc.insecure_channel(api.srv.addr) as ch:
        gen = generate_rpc(ch)
        prompt = "<|im_start|>user\nDescribe a person as JSON.<|im_end|>\n<|im_start|>assistant\n"
        text, final = "", None
        for r in gen(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(
                temperature=1.0, max_tokens=200, json_schema=json.dumps(PERSON))), timeout=120):
            if r.HasField("chunk"):
                text += r.chunk.text
            if r.HasField("final"):
                final = r.final
        assert final is not None and final.finish_reason == pb.FINISH_REASON_STOP, final
        jsonschema.validate(json.loads(text), PERSON)
        text = "".join(r.chunk.text for r in gen(pb.GenerateRequest(prompt="Count: ", sampling=pb.SamplingParams(
            temperature=1.0, max_tokens=20, grammar='root ::= [1-3] (", " [1-3]){2}')), timeout=60)
                       if r.HasField("chunk"))
        parts = text.split(", ")
        assert len(parts) == 3 and all(p in ("1", "2", "3") for p in parts), text
        expect_status(lambda: list(gen(pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(
            json_schema='{"type": "string", "format": "email"}')), timeout=10)),
            grpc.StatusCode.INVALID_ARGUMENT, "sampling.json_schema", "format \"email\" is not supported")
        expect_status(lambda: list(gen(pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(
            grammar="root ::= root \"a\"")), timeout=10)),
            grpc.StatusCode.INVALID_ARGUMENT, "sampling.grammar", "left recursion in rule 'root'")
        expect_status(lambda: list(gen(pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(
            grammar="root ::= \"a\"", json_object=True)), timeout=10)),
            grpc.StatusCode.INVALID_ARGUMENT, "exclusive")


def main():
    c = Checks()
    if have_model(QWEN, "structured output with Qwen2.5-Coder-0.5B"):
        api = Api()
        try:
            c.run("json_schema at temperature 1: two samples validate (jsonschema)", chat_json_schema, api)
            c.run("json_schema streamed: the deltas join into a valid document", chat_json_schema_streamed, api)
            c.run("json_object: a JSON object", chat_json_object, api)
            c.run("corvid.grammar on /v1/completions: sentences of the grammar", completion_gbnf, api)
            c.run("refusals: 400 naming the keyword, the param, the grammar's line", http_refusals, api)
            c.run("gRPC: json_schema and grammar in SamplingParams; INVALID_ARGUMENT", grpc_constraints, api)
        finally:
            api.stop()
    c.finish()


if __name__ == "__main__":
    main()
