"""Qwen3, Qwen3-MoE and DeepSeek V2/V3 (deepseek2) through corvid-run and corvid-server,
on the reduced synthetic shapes (corvid-quantize --synthetic qwen3-tiny / qwen3moe-tiny /
deepseek2-tiny / deepseek2-lite-tiny):

- tensor parallelism: `--tp 2` gives the greedy tokens of `--tp 1` (F32 and Q8_0; heads
  and every expert's rows split in two, the router whole on both ranks; deepseek2: the
  query heads, the dense layer's, the routed and the shared experts' rows split, the
  latent whole on both);
- batching: 16 concurrent greedy streams through corvid-server equal corvid-run's
  output for each prompt alone: the mixture routes each token by itself and a token's
  experts add up in the same order whatever else is in the step, so batching must not
  change a single token.
"""
import json
import os
import subprocess
import threading

import grpc

from corvid_testlib import BIN, TMP, Checks, Server, proto_modules

pb, _, _ = proto_modules()
PROMPT_IDS = "1,300,301,302,303,304,305,306,307,308,309,310"
PROMPTS = ["once upon a time %d" % i if i % 2 else "the little %s went home" % w
           for i, w in enumerate(["dog", "cat", "bird", "fox", "owl", "cow", "pig", "bee",
                                  "ant", "elk", "yak", "emu", "hen", "ram", "eel", "bat"])]
N = 32


def synthetic(shape, qtype):
    path = os.path.join(TMP, "%s-%s.gguf" % (shape, qtype))
    if not os.path.exists(path):
        r = subprocess.run([os.path.join(BIN, "corvid-quantize"), "--synthetic", shape, "--type", qtype, path],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    return path


def corvid_run(model, *args):
    r = subprocess.run([os.path.join(BIN, "corvid-run"), "-m", model, "-n", str(N), "--temp", "0", "--ignore-eos",
                        "--json", "-t", "2"] + list(args), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["tokens"]


def tp2_equals_tp1(shape, qtype):
    path = synthetic(shape, qtype)
    want = corvid_run(path, "--prompt-ids", PROMPT_IDS, "--tp", "1")
    got = corvid_run(path, "--prompt-ids", PROMPT_IDS, "--tp", "2")
    assert len(want) == N and got == want, "tp 2 %s\ntp 1 %s" % (got, want)
    print("  %s %s: tp 2 = tp 1, %d tokens (%d distinct)" % (shape, qtype, N, len(set(want))))


def stream_ids(addr, prompt):
    with grpc.insecure_channel(addr) as ch:
        rpc = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        req = pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(max_tokens=N, temperature=0,
                                                                             ignore_eos=True))
        ids, final = [], None
        for msg in rpc(req, timeout=300):
            if msg.WhichOneof("kind") == "chunk":
                ids += list(msg.chunk.token_ids)
            elif msg.WhichOneof("kind") == "final":
                final = msg.final
        assert final is not None and final.finish_reason == pb.FINISH_REASON_LENGTH, final
        return ids


def server_16_streams(shape):
    path = synthetic(shape, "Q8_0")
    want = [corvid_run(path, "-p", p) for p in PROMPTS]
    srv = Server("--model", path, "--threads", "2")
    try:
        got = [None] * len(PROMPTS)

        def one(i):
            got[i] = stream_ids(srv.addr, PROMPTS[i])
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        srv.terminate()
        srv.wait(30)
        srv.stop()
    for p, w, g in zip(PROMPTS, want, got):
        assert g == w, "%r: server %s, corvid-run %s" % (p, g, w)
    print("  16 concurrent streams of %d tokens equal corvid-run's (%d distinct sequences)" %
          (N, len(set(map(tuple, want)))))


def main():
    c = Checks()
    for shape, qtype in (("qwen3-tiny", "F32"), ("qwen3-tiny", "Q8_0"), ("qwen3moe-tiny", "F32"),
                         ("qwen3moe-tiny", "Q8_0"), ("deepseek2-tiny", "F32"), ("deepseek2-tiny", "Q8_0"),
                         ("deepseek2-lite-tiny", "F32"), ("deepseek2-lite-tiny", "Q8_0")):
        c.run("%s %s: tp 2 equals tp 1" % (shape, qtype), tp2_equals_tp1, shape, qtype)
    for shape in ("qwen3moe-tiny", "deepseek2-tiny", "deepseek2-lite-tiny"):
        c.run("%s: 16 concurrent server streams equal corvid-run" % shape, server_16_streams, shape)
    c.finish()


main()
