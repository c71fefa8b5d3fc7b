"""corvid-index end to end: build, query (text and JSON), add, info, a small recall
check on tests/data/rag/questions.jsonl, and clean failures on bad inputs and on a
corrupted index (query refuses every single-bit flip that corvid-server refuses).
Prints "N passed, N failed"."""
import json
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, summary  # noqa: E402
from corvid_testlib import DATA  # noqa: E402

BIN = os.path.join(os.environ["CORVID_BIN"], "corvid-index")
RAG = os.path.join(DATA, "rag")
INPUTS = ["store.jsonl", "warranty.md", "gift-cards.txt"]


def run(*args):
    p = subprocess.run([BIN, *args], cwd=RAG, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def query(index, q, *extra):
    rc, out, err = run("query", index, q, "--json", *extra)
    if rc != 0:
        return None, err
    return json.loads(out)["hits"], err


def main():
    seed = random.randrange(1 << 30)
    random.seed(seed)
    print(f"seed {seed}")
    tmp = tempfile.mkdtemp(prefix="corvid-index-")
    index = os.path.join(tmp, "kb.idx")

    rc, _, err = run("build", *INPUTS, "-o", index)
    check("build", rc == 0 and "8 documents" in err, err)
    rc, out, _ = run("info", index)
    check("info", rc == 0 and "documents 8" in out and "chunks 8" in out, out)

    questions = [json.loads(l) for l in open(os.path.join(RAG, "questions.jsonl"), encoding="utf-8")]
    found = 0
    for item in questions:
        hits, err = query(index, item["q"], "-k", "5")
        ids = [h["id"] for h in hits or []]
        found += item["doc"] in ids
        check(f"top1 {item['q']}", bool(ids) and ids[0] == item["doc"], f"{ids} {err}")
    check("recall@5", found == len(questions), f"{found}/{len(questions)}")

    hits, _ = query(index, "return refund", "-k", "2")
    check("json fields", hits and set(hits[0]) == {"id", "title", "url", "score"}
          and hits[0]["url"] == "https://shop.example/returns"
          and hits[0]["score"] >= hits[-1]["score"] > 0, hits)
    hits, _ = query(index, "退货", "--chunks")
    check("chunks carry text", hits and "chunk" in hits[0] and "退货" in hits[0]["text"], hits)
    rc, out, _ = run("query", index, "gift card")
    check("text output", rc == 0 and out.startswith("1. ") and "gift-cards.txt" in out, out)
    hits, _ = query(index, "nothing matches zyxwv")
    check("no hits", hits == [], hits)

    # add: a new document and a replacement of an existing id, written atomically
    newdoc = os.path.join(tmp, "new.jsonl")
    with open(newdoc, "w", encoding="utf-8") as f:
        f.write(json.dumps({"id": "pets", "title": "Pets", "text": "Dogs on a leash are welcome in every store."}) + "\n")
        f.write(json.dumps({"id": "hours-en", "title": "Opening hours", "text": "From March all stores are open around the clock."}) + "\n")
    rc, _, err = run("add", index, newdoc)
    check("add", rc == 0 and "9 documents" in err, err)
    hits, _ = query(index, "dogs leash")
    check("added doc found", hits and hits[0]["id"] == "pets", hits)
    hits, _ = query(index, "around the clock")
    check("replaced doc updated", hits and hits[0]["id"] == "hours-en", hits)
    hits, _ = query(index, "weekdays public holidays")
    check("replaced doc old text gone", not any(h["id"] == "hours-en" for h in hits or []), hits)
    check("no temp files left", sorted(os.listdir(tmp)) == ["kb.idx", "new.jsonl"], os.listdir(tmp))

    # bad inputs: clear messages, non-zero exit, old index untouched
    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"id":"a","text":"ok"}\n{"id":"b","text":42}\n')
    before = open(index, "rb").read()
    rc, _, err = run("add", index, bad)
    check("bad jsonl", rc == 1 and "bad.jsonl:2" in err and '"text"' in err, err)
    check("index untouched after failed add", open(index, "rb").read() == before)
    rc, _, err = run("build", "questions.csv", "-o", os.path.join(tmp, "x.idx"))
    check("unknown extension", rc == 1 and "unknown input type" in err, err)
    rc, _, err = run("build", "store.jsonl", "-o", os.path.join(tmp, "x.idx"), "--overlap", "600")
    check("bad overlap", rc == 1 and "overlap" in err, err)

    # chunks limited in a model's tokens
    model = os.path.join(DATA, "models", "stories260K.gguf")
    tok_index = os.path.join(tmp, "tok.idx")
    rc, _, err = run("build", *INPUTS, "-o", tok_index, "--tokenizer", model, "--chunk-tokens", "32")
    rc2, out, _ = run("info", tok_index)
    check("token chunking", rc == 0 and rc2 == 0 and int(out.split("chunks ")[1].split()[0]) > 8, err + out)
    rc, _, err = run("build", *INPUTS, "-o", tok_index, "--chunk-tokens", "32")
    check("token chunking needs a tokenizer", rc == 1 and "go together" in err, err)
    os.unlink(tok_index)

    # corrupted copies: an error message, never a crash
    data = bytearray(before)
    for trial in range(40):
        cor = bytearray(data)
        for _ in range(random.randint(1, 8)):
            at = random.randrange(min(len(cor), 600))
            if at != 24:  # the flags byte may legitimately turn CRCs off
                cor[at] = random.randrange(256)
        if trial % 4 == 0:
            cor = cor[: random.randrange(len(cor))]
        path = os.path.join(tmp, "cor.idx")
        with open(path, "wb") as f:
            f.write(cor)
        rc, _, err = run("query", path, "refund 退货")
        check(f"corrupt {trial}", rc in (0, 1) and (rc == 0 or "corvid-index: index" in err), f"rc {rc} {err}")
        rc, _, err = run("info", path)  # info verifies CRCs
        check(f"corrupt crc {trial}", rc == 1 or cor == data, f"rc {rc} {err}")

    # single-bit flips anywhere in the file: `query` opens the index the way the server
    # does (CRCs included), so it refuses exactly the flips the server refuses
    server = os.path.join(os.environ["CORVID_BIN"], "corvid-server")
    flips = random.sample(range(len(data) * 8), min(200, len(data) * 8))
    server_refused = cli_refused = 0
    mismatches = []
    for bit in flips:
        cor = bytearray(data)
        cor[bit // 8] ^= 1 << (bit % 8)
        path = os.path.join(tmp, "flip.idx")
        with open(path, "wb") as f:
            f.write(cor)
        srv = subprocess.run([server, "--rag-kb", "docs=" + path, "--check-config"], capture_output=True,
                             text=True, timeout=60)
        rc, _, err = run("query", path, "refund 退货")
        server_refused += srv.returncode != 0
        cli_refused += rc != 0
        if (srv.returncode != 0) != (rc != 0) or (rc != 0 and "corvid-index: index" not in err):
            mismatches.append((bit, srv.returncode, rc, err.strip()[:120]))
    check(f"bit flips: query refuses every flip the server refuses ({cli_refused} of {len(flips)} refused "
          f"by the CLI, {server_refused} by the server)", not mismatches and server_refused > len(flips) // 2,
          mismatches[:5])

    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
