#!/usr/bin/python3
"""bench/tool-calls.py: how often a model's tool calls parse, with and without the
constraint.

  bench/tool-calls.py [--model FILE] [--prompts 50] [--temperature 0.7] [--seed 1]
                      [--max-tokens 128]

--prompts tool-using requests, drawn (seeded) from templates over five tools (weather,
time, currency, web search, e-mail), go to corvid-server's /v1/chat/completions twice:
with tool_choice "auto" (the model writes its calls freely; the parser takes what it
can) and with tool_choice "required" (the output is constrained to the template's call
syntax and each tool's parameter schema). A generation counts as parsed when the answer
carries at least one tool call, and as valid when every call names one of the tools and
its arguments hold the tool's required keys. Each request gets its own seed, the same
in both modes. Without --model, Qwen2.5-Coder-0.5B-Instruct from ~/.cache/corvid/models.

Prints one JSON object: per mode the counts and rates, the median latency, and up to
three failed answers as they came.
"""
import argparse
import json
import os
import random
import statistics
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "integration"))
# The server dies with this script (PR_SET_PDEATHSIG) and on its signals.
from corvid_testlib import QWEN, Server, free_port  # noqa: E402


def tool(name, desc, props, required):
    return {"type": "function", "function": {"name": name, "description": desc, "parameters": {
        "type": "object", "properties": props, "required": required}}}


S = {"type": "string"}
TOOLS = [
    tool("get_weather", "Get the current weather in a city.", {"city": S}, ["city"]),
    tool("get_time", "Get the current local time in a city.", {"city": S}, ["city"]),
    tool("convert_currency", "Convert an amount of money from one currency to another.",
         {"amount": {"type": "number"}, "from_currency": S, "to_currency": S},
         ["amount", "from_currency", "to_currency"]),
    tool("search_web", "Search the web and return the top results.", {"query": S}, ["query"]),
    tool("send_email", "Send an e-mail.", {"to": S, "subject": S, "body": S}, ["to", "subject", "body"]),
]
REQUIRED = {t["function"]["name"]: t["function"]["parameters"]["required"] for t in TOOLS}
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Nairobi", "Toronto", "Madrid", "Hanoi", "Cairo", "Sydney"]
CUR = ["USD", "EUR", "JPY", "GBP", "CHF", "INR"]
TOPICS = ["the tallest building in Europe", "how to repot a cactus", "the 2026 Tour de France winner",
          "rust borrow checker errors", "cheap flights to Lisbon", "the boiling point of ethanol"]
PEOPLE = ["alice@example.com", "bob@example.org", "team@example.net"]
ASKS = [
    lambda r: "What's the weather like in %s today?" % r.choice(CITIES),
    lambda r: "Is it raining in %s right now?" % r.choice(CITIES),
    lambda r: "What time is it in %s?" % r.choice(CITIES),
    lambda r: "Convert %d %s to %s." % (r.randint(5, 5000), *r.sample(CUR, 2)),
    lambda r: "How much is %d %s in %s?" % (r.randint(5, 5000), *r.sample(CUR, 2)),
    lambda r: "Search the web for %s." % r.choice(TOPICS),
    lambda r: "Look up %s online." % r.choice(TOPICS),
    lambda r: "Email %s that the meeting moves to %d pm, subject 'Meeting'." % (r.choice(PEOPLE), r.randint(1, 5)),
]


def post(base, body):
    req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def judge(msg):
    """(parsed, valid) for one answer message."""
    calls = msg.get("tool_calls") or []
    if not calls:
        return False, False
    for c in calls:
        name = c["function"]["name"]
        try:
            args = json.loads(c["function"]["arguments"])
        except ValueError:
            return True, False
        if name not in REQUIRED or not isinstance(args, dict) or not all(k in args for k in REQUIRED[name]):
            return True, False
    return True, True


def run_mode(base, prompts, choice, args):
    parsed = valid = 0
    lat, fails = [], []
    for i, p in enumerate(prompts):
        body = {"messages": [{"role": "user", "content": p}], "tools": TOOLS, "tool_choice": choice,
                "temperature": args.temperature, "seed": args.seed + i, "max_tokens": args.max_tokens}
        t0 = time.monotonic()
        msg = post(base, body)["choices"][0]["message"]
        lat.append(time.monotonic() - t0)
        ok_parse, ok_valid = judge(msg)
        parsed += ok_parse
        valid += ok_valid
        if not ok_valid and len(fails) < 3:
            fails.append({"prompt": p, "content": msg.get("content"), "tool_calls": msg.get("tool_calls")})
        print("%s %d/%d parsed=%d valid=%d" % (choice, i + 1, len(prompts), ok_parse, ok_valid), file=sys.stderr)
    n = len(prompts)
    return {"tool_choice": choice, "n": n, "parsed": parsed, "valid": valid, "parse_rate": parsed / n,
            "valid_rate": valid / n, "median_latency_s": statistics.median(lat), "failures": fails}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=QWEN)
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    prompts = [rng.choice(ASKS)(rng) for _ in range(args.prompts)]
    port = free_port()
    srv = Server("--model", args.model, "--http-listen", "127.0.0.1:%d" % port, ready_timeout=180)
    try:
        base = "http://127.0.0.1:%d" % port
        modes = [run_mode(base, prompts, c, args) for c in ("auto", "required")]
    finally:
        srv.stop()
    print(json.dumps({"model": os.path.basename(args.model), "temperature": args.temperature,
                      "prompts": args.prompts, "seed": args.seed, "modes": modes,
                      "loadavg": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
