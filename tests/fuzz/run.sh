#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time on a scratch copy of its seed corpus.
# Usage: tests/fuzz/run.sh FUZZ_BIN_DIR SECONDS
set -u
dir=$1 secs=$2
here=$(cd "$(dirname "$0")" && pwd)
rc=0
for f in "$dir"/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f")
    work=$(mktemp -d)
    seeds="$here/corpus/$name"
    echo "=== $name for ${secs}s"
    if ! "$f" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$work/" \
          "$work" ${seeds:+$( [ -d "$seeds" ] && echo "$seeds")} 2>&1 | tail -n 25; then
        echo "$name: FAILED, artifacts in $work"; rc=1; continue
    fi
    rm -rf "$work"
done
exit $rc
