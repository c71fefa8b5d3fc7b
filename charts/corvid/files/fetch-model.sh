#!/bin/sh
# Makes MODEL_PATH hold the model whose SHA-256 is MODEL_SHA256 before the server starts.
# A file already there with the right digest is kept (a PVC fills once); otherwise
# MODEL_URI is downloaded next to it and moved into place only after its digest matched,
# so a half-written or wrong file never reaches the server. Exits non-zero with a
# message naming the path, the URI and both digests when anything is off.
set -eu
path=${MODEL_PATH:?MODEL_PATH is not set}
uri=${MODEL_URI:-}
want=$(printf '%s' "${MODEL_SHA256:-}" | tr 'A-F' 'a-f')
timeout=${MODEL_DOWNLOAD_TIMEOUT:-3600}

digest() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$path" ]; then
    if [ -z "$want" ]; then
        echo "fetch-model: $path is present; no model.sha256 to check it against"
        exit 0
    fi
    have=$(digest "$path")
    if [ "$have" = "$want" ]; then
        echo "fetch-model: $path is present with sha256 $want"
        exit 0
    fi
    if [ -z "$uri" ]; then
        echo "fetch-model: $path has sha256 $have, model.sha256 says $want, and no model.uri is set to fetch the right file" >&2
        exit 1
    fi
    echo "fetch-model: $path has sha256 $have, not $want: downloading it again"
elif [ -z "$uri" ]; then
    echo "fetch-model: no model at $path and no model.uri to download it from: copy the file onto the volume or set model.uri and model.sha256" >&2
    exit 1
fi

part="$path.part"
rm -f "$part"
echo "fetch-model: downloading $uri"
if ! curl -fsSL --retry 5 --retry-delay 5 --max-time "$timeout" -o "$part" "$uri"; then
    rm -f "$part"
    echo "fetch-model: download of $uri failed" >&2
    exit 1
fi
have=$(digest "$part")
if [ "$have" != "$want" ]; then
    rm -f "$part"
    echo "fetch-model: $uri has sha256 $have, model.sha256 says $want: refusing it" >&2
    exit 1
fi
mv -f "$part" "$path"
echo "fetch-model: $path ready, sha256 $want"
