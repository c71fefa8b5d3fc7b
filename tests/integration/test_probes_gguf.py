"""Probe suite (issue 17.7): hostile GGUF files against a real corvid-server and
corvid-run. Each class of broken file (hostile_gguf.py: truncated header, kv section
and tensor infos, absurd counts, lengths past the end, unknown value types, nested
arrays, overflowing dimensions, offsets out of the file, misaligned or overlapping,
duplicate names, wrong tensor types and shapes for a role, missing tensors, a
vocabulary larger than the embeddings, NaN/Inf/zero hyperparameters, ...) is made from
the committed stories260K.gguf into a temp dir and must be:
  - refused by Admin.LoadModel: the call is OK, the version ends FAILED with a message
    naming the key, tensor or header part, and is unloaded again;
  - refused by corvid-run with exit status 1 and the same name on its one error line;
while the server keeps serving the good version (a Generate after every 8 files, and a
health Check at the end). Files that are odd but valid (a tokenizer smaller than the
embedding, as real models pad it) load and generate."""
import os
import subprocess

import grpc

from corvid_testlib import BIN, DATA, TMP, Admin, Checks, Server, proto_modules
from gguf_edit import ARR, F32, I32, STR, Gguf
from hostile_gguf import cases

pb, admin_pb, health_pb = proto_modules()
MODEL = os.path.join(DATA, "models", "stories260K.gguf")
DIR = os.path.join(TMP, "hostile")
FAILED, READY = admin_pb.SLOT_STATE_FAILED, admin_pb.SLOT_STATE_READY


def generate(addr, version="", n=4, temperature=0.0, prompt="Once upon a time"):
    with grpc.insecure_channel(addr) as ch:
        gen = ch.unary_stream("/corvid.v1.Inference/Generate", request_serializer=pb.GenerateRequest.SerializeToString,
                              response_deserializer=pb.GenerateResponse.FromString)
        sp = pb.SamplingParams(max_tokens=n, temperature=temperature, top_k=0, top_p=1.0,
                               seed=pb.UInt64Value(value=7))
        out = list(gen(pb.GenerateRequest(prompt=prompt, sampling=sp, model_version=version), timeout=60))
    assert out and out[-1].WhichOneof("kind") == "final", out[-1:]
    assert out[-1].final.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH), out[-1]
    return out


def write_case(i, make):
    path = os.path.join(DIR, "h%02d.gguf" % i)
    with open(path, "wb") as f:
        f.write(make())
    return path


def hostile_files_refused(srv):
    adm = Admin(srv.addr)
    failures = []
    for i, (name, make, field) in enumerate(cases(MODEL)):
        path = write_case(i, make)
        version = "h%02d" % i
        st = adm.load(version, path)
        if st.state != FAILED or field not in st.message or "loading " + path not in st.message:
            failures.append(("LoadModel", name, st.state, st.message))
        adm.unload(version)
        r = subprocess.run([os.path.join(BIN, "corvid-run"), "-m", path, "-p", "Once", "-n", "2", "-t", "1"],
                           capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        if r.returncode != 1 or len(lines) != 1 or field not in lines[0]:
            failures.append(("corvid-run", name, r.returncode, r.stderr.strip()[-400:]))
        os.unlink(path)
        if i % 8 == 7:
            generate(srv.addr)
    assert not failures, "\n".join(map(str, failures))
    assert [s.version for s in adm.status().slots] == ["stories260K"]
    generate(srv.addr)
    with grpc.insecure_channel(srv.addr) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check",
                               request_serializer=health_pb.HealthCheckRequest.SerializeToString,
                               response_deserializer=health_pb.HealthCheckResponse.FromString)
        assert check(health_pb.HealthCheckRequest(service="corvid.v1.Inference"), timeout=10).status == \
            health_pb.HealthCheckResponse.SERVING


def smaller_tokenizer_serves(srv):
    """300 tokens over 512 embedding rows (as Qwen2.5 pads its embedding): the model
    loads, and sampling hot enough to reach every row never yields a token the
    tokenizer cannot print, nor a failed request. Without a U+2581 piece each space
    takes 3 byte tokens: a prompt of spaces still fits the id buffers."""
    g = Gguf(MODEL)
    n = 300
    for key, vtype in (("tokenizer.ggml.tokens", STR), ("tokenizer.ggml.scores", F32),
                       ("tokenizer.ggml.token_type", I32)):
        g.set(key, ARR, (vtype, g.get(key)[1][:n]))
    path = os.path.join(DIR, "small-vocab.gguf")
    g.write(path)
    adm = Admin(srv.addr)
    st = adm.load("small", path)
    assert st.state == READY, st.message
    try:
        for t in (1.0, 5.0, 50.0):
            out = generate(srv.addr, "small", n=40, temperature=t, prompt="a b c d " * 8)
            ids = [i for m in out if m.WhichOneof("kind") == "chunk" for i in m.chunk.token_ids]
            assert len(ids) == 40 and max(ids) < n, ids
        r = subprocess.run([os.path.join(BIN, "corvid-run"), "-m", path, "-p", "a b c d", "-n", "40", "--temp", "50",
                            "--top-k", "0", "--top-p", "1", "--min-p", "0", "-t", "1"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        adm.unload("small")


def main():
    os.makedirs(DIR)
    c = Checks()
    srv = Server("--model", MODEL, "--threads", "1", "--model-dirs", DIR + "," + os.path.dirname(MODEL))
    try:
        c.run("%d hostile GGUF files: LoadModel FAILED and corvid-run exit 1, naming the field; "
              "the server keeps serving" % len(cases(MODEL)), hostile_files_refused, srv)
        c.run("a tokenizer smaller than the embedding loads and samples only printable tokens",
              smaller_tokenizer_serves, srv)
    finally:
        srv.stop()
    c.finish()


main()
