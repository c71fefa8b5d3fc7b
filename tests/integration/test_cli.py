"""The command lines of every binary in $CORVID_BIN follow one convention (kernels/base/cli.h):

- `--help` and `-h` print the usage on stdout, nothing on stderr, exit 0; so do each
  command's --help and `help [COMMAND]` for corvidctl, corvid-controlplane and
  corvid-index;
- an unknown option (`--no-such-flag`) or a missing argument prints a line naming it
  and the usage on stderr, nothing on stdout, exit 2, within a timeout (an argument
  loop that never ends fails here);
- the usage lists what the README documents: corvid-server every key and flag of the
  configuration table (and the rag_* keys), each key with its flag; every binary the
  --flags its README command lines use;
- `corvid-server --check-config` refuses files that cannot be read, naming key and path;
- `corvidctl tokenize --model-version V` reaches the server: the right version gives
  the ids, an unknown one NOT_FOUND (checked through corvidctl and through grpcio).
"""
import os
import re
import subprocess

import grpc

from corvid_testlib import BIN, DATA, ROOT, TMP, Checks, Server, proto_modules

STORIES = os.path.join(DATA, "models", "stories260K.gguf")
Q8 = os.path.join(DATA, "models", "stories260K-Q8_0-mixed.gguf")
README = os.path.join(ROOT, "README.md")
TIMEOUT = 20
# Commands whose own --help prints their usage.
SUBCOMMANDS = {
    "corvidctl": [["generate"], ["chat"], ["tokenize"], ["models"], ["health"], ["admin"],
                  ["admin", "load"], ["admin", "unload"], ["admin", "traffic"], ["admin", "status"],
                  ["admin", "fault"]],
    "corvid-controlplane": [["run"], ["version"], ["version", "add"], ["rollout"], ["rollout", "start"],
                            ["rollout", "status"]],
    "corvid-index": [["build"], ["add"], ["query"], ["info"], ["sources"]],
}
# `help COMMAND` works for these.
HELP_COMMANDS = {"corvidctl": ["generate", "chat", "tokenize", "models", "health", "admin"],
                 "corvid-controlplane": ["run", "version", "rollout"]}


def binaries():
    return sorted(f for f in os.listdir(BIN) if os.access(os.path.join(BIN, f), os.X_OK)
                  and not os.path.isdir(os.path.join(BIN, f)))


def run(name, *args, timeout=TIMEOUT):
    """(exit status, stdout, stderr); a run past the timeout raises (an endless loop)."""
    r = subprocess.run([os.path.join(BIN, name)] + list(args), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr


def expect_help(name, *args):
    rc, out, err = run(name, *args)
    assert rc == 0, (name, args, rc, err[-500:])
    assert "usage" in out.lower(), (name, args, out[:300])
    assert err == "", (name, args, err[-500:])
    return out


def expect_usage_error(name, *args, says=None):
    rc, out, err = run(name, *args)
    assert rc == 2, (name, args, rc, out[-300:], err[-500:])
    assert out == "", (name, args, out[-300:])
    first, _, rest = err.partition("\n")
    assert first.startswith(name + ": ") and "usage" not in first, (name, args, err[:300])
    assert "usage:" in rest, (name, args, err[:500])
    if says:
        assert says in first, (name, args, first)


def help_and_unknown_option(name):
    expect_help(name, "--help")
    expect_help(name, "-h")
    expect_usage_error(name, "--no-such-flag", says="--no-such-flag")


def subcommand_help(name):
    for words in SUBCOMMANDS[name]:
        out = expect_help(name, *words, "--help")
        assert name + " " + words[0] in out, (name, words, out[:300])
        expect_usage_error(name, *words, "--no-such-flag", says="--no-such-flag")
    for cmd in HELP_COMMANDS.get(name, []):
        assert expect_help(name, "help", cmd) == expect_help(name, cmd, "--help"), (name, cmd)
    if name in HELP_COMMANDS:
        assert expect_help(name, "help") == expect_help(name, "--help"), name
        expect_usage_error(name, "help", "no-such-command", says="no-such-command")
    expect_usage_error(name)  # no command
    expect_usage_error(name, "no-such-command", says="no-such-command")


def missing_arguments():
    """What each binary cannot do without is a usage error that names it."""
    cases = [
        ("corvidctl", ["generate", "-p", "x"], "-a HOST:PORT"),
        ("corvidctl", ["generate", "-a", "127.0.0.1:1"], "-p TEXT"),
        ("corvidctl", ["tokenize", "-a", "127.0.0.1:1", "-p"], "-p needs a value"),
        ("corvidctl", ["admin", "load", "-a", "127.0.0.1:1", "--version", "v"], "--uri"),
        ("corvidctl", ["models", "-a", "127.0.0.1:1", "--temp", "1"], "--temp is not an option of models"),
        ("corvid-run", ["--info"], "-m MODEL"),
        ("corvid-run", ["-m", STORIES], "mode"),
        ("corvid-server", ["--listen"], "--listen needs a value"),
        ("corvid-controlplane", ["run"], "--config"),
        ("corvid-controlplane", ["version", "add", "m", "v"], "--uri"),
        ("corvid-index", ["query", "kb.idx"], "question"),
        ("corvid-quantize", [STORIES, os.path.join(TMP, "out.gguf")], "TYPE"),
        ("bench-decode", [], "-m MODEL"),
        ("bench-load", [], "--addr"),
    ]
    for name, args, says in cases:
        expect_usage_error(name, *args, says=says)


def readme_section(title):
    text = open(README, encoding="utf-8").read()
    start = text.index("\n" + title + "\n")
    end = re.search(r"\n#{1,3} ", text[start + 1:])
    return text[start:start + 1 + end.start()] if end else text[start:]


def server_flags_documented():
    """Every key and flag of the README's configuration table is in corvid-server --help,
    and every key has its own flag there."""
    table = [line for line in readme_section("### corvid-server").splitlines() if line.startswith("| `")]
    assert len(table) >= 15, table
    out = expect_help("corvid-server", "--help")
    flags, keys = set(), set()
    for row in table:
        first = row.split("|")[1]
        for word in re.findall(r"`([^`]+)`", first):
            (flags if word.startswith("--") else keys).add(word)
    rag = set(re.findall(r"`(rag_[a-z_]+)`", readme_section("### Retrieval-augmented generation")))
    assert len(keys) >= 25 and len(rag) >= 8, (keys, rag)
    missing = [f for f in sorted(flags) if not re.search(r"(^|\s)" + re.escape(f) + r"\b", out)]
    assert not missing, ("flags the README's table names but --help lacks", missing)
    # A key's line in the usage: "  --flag VALUE  (key, default ...)".
    no_flag = [k for k in sorted(keys | rag) if not re.search(r"^  --[a-z0-9-]+ .*\(" + k + ",", out, re.M)]
    assert not no_flag, ("keys without a flag in --help", no_flag)


def readme_command_lines():
    """The --flags the README gives each binary, by binary: in command lines (code blocks
    and inline code) that start with the binary, and in the other inline code of the
    binary's own section ("### corvidctl": `--token`, `--tls-ca/--tls-cert/--tls-key`)."""
    text = open(README, encoding="utf-8").read()
    names = binaries()
    pattern = re.compile(r"(?:^|\s)(?:build/bin/)?(" + "|".join(map(re.escape, names)) + r")(?=\s|$)")
    flag = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
    found = {}
    for section in re.split(r"\n(?=#{1,3} )", text):
        title = section.split("\n", 1)[0].lstrip("# ").strip()
        spans = []
        for block in re.findall(r"```sh\n(.*?)```", section, re.S):
            spans += block.replace("\\\n", " ").splitlines()
        spans += re.findall(r"`([^`\n]*(?:\n[^`\n]*)?)`", re.sub(r"```.*?```", "", section, flags=re.S))
        for span in spans:
            span = span.split(" #")[0]  # shell comments
            hits = list(pattern.finditer(span))
            if not hits and title in names:
                found.setdefault(title, set()).update(flag.findall(span))
            for i, m in enumerate(hits):
                rest = span[m.end():hits[i + 1].start() if i + 1 < len(hits) else len(span)]
                found.setdefault(m.group(1), set()).update(flag.findall(rest))
    return found


def readme_flags_in_help():
    found = readme_command_lines()
    for name in ("corvid-server", "corvidctl", "corvid-run", "corvid-index", "corvid-quantize",
                 "corvid-controlplane"):
        assert found.get(name), ("no README command line for", name)
    problems = []
    for name, flags in sorted(found.items()):
        out = expect_help(name, "--help")
        problems += [(name, f) for f in sorted(flags) if not re.search(r"(^|[\s\[(,/|])" + re.escape(f) + r"\b", out)]
    assert not problems, ("README flags missing from --help", problems)


def check_config_files():
    for args, key, path in [
        (["--model", "/nonexistent/m.gguf"], "model", "/nonexistent/m.gguf"),
        (["--auth-config", "/nonexistent/auth.json"], "auth_config", "/nonexistent/auth.json"),
        (["--tls-cert", STORIES, "--tls-key", "/nonexistent/key.pem"], "tls_key", "/nonexistent/key.pem"),
        (["--tls-cert", STORIES, "--tls-key", STORIES, "--tls-client-ca", "/nonexistent/ca.pem"], "tls_client_ca",
         "/nonexistent/ca.pem"),
        (["--model", "/"], "model", "/"),
    ]:
        rc, out, err = run("corvid-server", "--check-config", *args)
        assert rc == 1 and "config ok" not in out, (args, rc, out, err)
        assert key in err and path in err, (args, err)
    rc, out, err = run("corvid-server", "--check-config", "--model", STORIES)
    assert (rc, out) == (0, "config ok\n"), (rc, out, err)


def tokenize_rpc(addr, **kw):
    pb, _, _ = proto_modules()
    with grpc.insecure_channel(addr) as ch:
        rpc = ch.unary_unary("/corvid.v1.Inference/Tokenize", request_serializer=pb.TokenizeRequest.SerializeToString,
                             response_deserializer=pb.TokenizeResponse.FromString)
        return rpc(pb.TokenizeRequest(**kw), timeout=30)


def tokenize_model_version(srv):
    want = "1 403 407 261 378"  # stories260K, with BOS (README)
    # A second version beside v1, with no traffic: only a pinned request reaches it.
    rc, out, err = run("corvidctl", "admin", "load", "-a", srv.addr, "--version", "v2", "--uri", Q8, "--wait",
                       timeout=60)
    assert rc == 0 and "v2: ready" in out, (rc, out, err)
    for version in ("v1", "v2"):
        rc, out, err = run("corvidctl", "tokenize", "-a", srv.addr, "-p", "Once upon a time", "--model-version", version)
        assert rc == 0 and out.strip() == want, (version, rc, out, err)
    rc, out, err = run("corvidctl", "tokenize", "-a", srv.addr, "-p", "Once upon a time", "--model-version", "nope")
    assert rc == 1 and "NOT_FOUND" in err and "nope" in err and out == "", (rc, out, err)
    # The server, through an independent client: the response names the pinned version.
    assert tokenize_rpc(srv.addr, text="Once upon a time", model_version="v2").model_version == "v2"
    assert tokenize_rpc(srv.addr, text="Once upon a time").model_version == "v1"
    try:
        tokenize_rpc(srv.addr, text="x", model_version="nope")
        raise AssertionError("an unknown version was answered")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND and "nope" in e.details(), (e.code(), e.details())


def main():
    c = Checks()
    names = binaries()
    for want in ("corvid-server", "corvid-run", "corvidctl", "corvid-controlplane", "corvid-index",
                 "corvid-quantize", "bench-decode"):
        c.run("%s is in $CORVID_BIN" % want, lambda w=want: None if w in names else (_ for _ in ()).throw(
            AssertionError("%s missing from %s" % (w, BIN))))
    for name in names:
        c.run("%s: --help and -h on stdout, exit 0; --no-such-flag: usage on stderr, exit 2" % name,
              help_and_unknown_option, name)
    for name in sorted(SUBCOMMANDS):
        c.run("%s: each command's --help, help COMMAND, unknown commands" % name, subcommand_help, name)
    c.run("missing arguments are named usage errors", missing_arguments)
    c.run("corvid-server --help: every key and flag of the README's configuration table", server_flags_documented)
    c.run("every --flag of the README's command lines is in that binary's --help", readme_flags_in_help)
    c.run("corvid-server --check-config refuses files it cannot read, naming key and path", check_config_files)
    srv = Server("--model", STORIES, "--model-version", "v1", "--threads", "1")
    try:
        c.run("corvidctl tokenize --model-version: the version's ids, NOT_FOUND for an unknown one",
              tokenize_model_version, srv)
    finally:
        srv.stop()
    c.finish()


if __name__ == "__main__":
    main()
