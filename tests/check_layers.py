#!/usr/bin/env python3
"""check_layers: fail on an #include that crosses a layer boundary.

The Makefile owns the layer table and passes it here (`make check-layers`), one argument
per layer:  NAME:DIRS:PUBLIC:SEES:PKGS  (lists comma-separated; SEES is every layer below
it, already closed over). The build already compiles each layer with only the include
paths it may use; this check also catches what include paths cannot:

  - a quoted include with a path ("../model/model.h", "cpu/matmul.h") that reaches a
    folder the layer may not see;
  - a system library header (<grpc/grpc.h>, <curl/curl.h>, ...) in a layer whose
    Makefile entry does not list that library (gRPC only in service/ and api/);
  - two headers with the same name in different folders (includes are by bare name,
    so the include path order would silently pick one);
  - a tool of api/ or controlplane/ that includes server headers.

Prints one line per violation ("server/engine/router.c:9: includes audit.h of layer
security, which engine may not use") and exits 1 if there was any.
"""
import os
import re
import sys

# System headers by library (the pkg-config name the Makefile's PKGS_* use).
LIBRARY_HEADERS = [
    (re.compile(r"grpc/"), "grpc"),
    (re.compile(r"protobuf-c/"), "libprotobuf-c"),
    (re.compile(r"curl/"), "libcurl"),
    (re.compile(r"jansson\.h$"), "jansson"),
    (re.compile(r"microhttpd\.h$"), "libmicrohttpd"),
    (re.compile(r"openssl/"), "openssl"),
    (re.compile(r"utf8proc\.h$"), "libutf8proc"),
    (re.compile(r"zlib\.h$"), "zlib"),
    (re.compile(r"hiredis/"), "hiredis"),
    (re.compile(r"(cuda|cublas|nccl)"), "cuda"),
]
# Tools live beside the layer they belong to and may see only what it sees (of our
# headers: a tool may print JSON with jansson whatever its layer).
TOOL_DIRS = {"api/tools": "client", "controlplane/tools": "cp"}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def parse_layers(args):
    layers = {}
    for a in args:
        name, dirs, pub, sees, pkgs = a.split(":")
        split = lambda v: [x for x in v.split(",") if x]
        layers[name] = {"dirs": split(dirs), "pub": split(pub), "sees": split(sees),
                        "pkgs": set(split(pkgs))}
    return layers


def sources(d):
    if not os.path.isdir(d):
        return []
    return sorted(os.path.join(d, f) for f in os.listdir(d)
                  if f.endswith((".c", ".h", ".cu")))


def owner(layers, path):
    """The layer whose folders (own or public) hold this header file: the folder itself,
    else the folder it lies under (generated corvid/v1/*.pb-c.h, api/include/corvid/)."""
    here = os.path.dirname(os.path.normpath(path))
    under = None
    for name, l in layers.items():
        for d in map(os.path.normpath, l["dirs"] + l["pub"]):
            if here == d:
                return name
            if under is None and here.startswith(d + os.sep):
                under = name
    return under


def check_file(layers, name, path, problems, system=True):
    l = layers[name]
    visible = list(l["dirs"]) + list(l["pub"])
    for s in l["sees"]:
        visible += layers[s]["pub"]
    allowed_pkgs = set(l["pkgs"])
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            kind, inc = m.groups()
            where = f"{path}:{n}"
            if kind == "<":
                for pat, lib in LIBRARY_HEADERS:
                    if system and pat.match(inc) and lib not in allowed_pkgs:
                        problems.append(f"{where}: includes <{inc}> ({lib}), which layer {name} "
                                        f"does not use (PKGS_{name} in the Makefile)")
                continue
            # Quoted: the same folder first, then the include path, as the compiler does.
            here = os.path.join(os.path.dirname(path), inc)
            found = here if os.path.exists(here) else None
            if not found:
                for d in visible:
                    cand = os.path.join(d, inc)
                    if os.path.exists(cand):
                        found = cand
                        break
            if found:
                o = owner(layers, found)
                if o is not None and o != name and o not in l["sees"]:
                    problems.append(f"{where}: includes {inc} of layer {o}, which {name} may not use")
                continue
            # Not visible: name the layer that has it, if any.
            o = None
            for other, ol in layers.items():
                for d in ol["dirs"] + ol["pub"]:
                    if os.path.exists(os.path.join(d, os.path.basename(inc))):
                        o = other
            if o:
                problems.append(f"{where}: includes {inc} of layer {o}, which {name} may not use")
            elif not inc.endswith(".pb-c.h"):  # generated: exists only after protoc-c
                problems.append(f"{where}: includes {inc}, which no visible folder has")


def main():
    layers = parse_layers(sys.argv[1:])
    problems = []
    seen = {}
    checked = set()
    for name, l in layers.items():
        for d in l["dirs"] + l["pub"]:
            for p in sources(d):
                if p in checked:
                    continue
                checked.add(p)
                if p.endswith(".h"):
                    base = os.path.basename(p)
                    if base in seen:
                        problems.append(f"{p}: header name also used by {seen[base]}")
                    seen.setdefault(base, p)
                check_file(layers, owner(layers, p) or name, p, problems)
    for d, name in TOOL_DIRS.items():
        for p in sources(d):
            check_file(layers, name, p, problems, system=False)
    for p in problems:
        print(p)
    print(f"check-layers: {len(layers)} layers, {len(checked)} files, {len(problems)} violations")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
