#!/usr/bin/env bash
# Server overhead, as ratios measured in one run on one model:
#   single = bench-load at concurrency 1 (through gRPC) / corvid-run's decode tokens/s
#   batched = bench-load at concurrency C / bench-engine at concurrency C (in process)
#   scaling = bench-load at concurrency C / bench-load at concurrency 1
# Usage: bench/serve-overhead.sh MODEL [C] [MAX_TOKENS] [REQUESTS_PER_STREAM]
# THREADS=N gives every side the same --threads (default: each binary's default).
# Prints one JSON object. Medians of 3 runs each (7 for corvid-run; 20 requests a run at
# concurrency 1, so that the first, cold request is not a third of the sample); the
# machine's noise applies to both sides.
set -eu
model=${1:?usage: serve-overhead.sh MODEL [CONCURRENCY] [MAX_TOKENS] [REQUESTS_PER_STREAM]}
conc=${2:-64}
ntok=${3:-100}
per=${4:-2}
bin=${CORVID_BIN:-build/bin}
threads=${THREADS:+--threads $THREADS}
tmp=$(mktemp -d)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/corvid-server" $threads --listen "127.0.0.1:$port" --model "$model" --max-running "$conc" \
    --max-batch-tokens $((conc > 256 ? conc : 256)) --max-waiting 4096 2>"$tmp/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 600); do grep -q '"model ready"' "$tmp/server.log" && break; sleep 0.1; done

median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
field() { /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# A 100-token decode of a tiny model takes milliseconds: 7 runs for a steady median.
run_tps=$(for _ in 1 2 3 4 5 6 7; do "$bin/corvid-run" $threads -m "$model" -p "Once upon a time" -n "$ntok" --temp 0 --json \
            | field decode_tokens_per_s; done | median)
load1=$(for _ in 1 2 3; do "$bin/bench-load" --addr "127.0.0.1:$port" --concurrency 1 --requests 20 \
          --max-tokens "$ntok" --ignore-eos | field output_tokens_per_s; done | median)
loadc=$(for _ in 1 2 3; do "$bin/bench-load" --addr "127.0.0.1:$port" --concurrency "$conc" \
          --requests $((conc * per)) --max-tokens "$ntok" --ignore-eos | field output_tokens_per_s; done | median)
engc=$("$bin/bench-engine" $threads -m "$model" --concurrency "$conc" --requests $((conc * per)) --max-tokens "$ntok" \
        --runs 3 | field output_tokens_per_s)
/usr/bin/python3 - "$model" "$conc" "$run_tps" "$load1" "$loadc" "$engc" <<'PY'
import json, sys
m, c, run, l1, lc, ec = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
print(json.dumps({"model": m, "concurrency": c, "corvid_run_decode_tps": run, "grpc_c1_tps": l1,
                  "grpc_cN_tps": lc, "engine_cN_tps": ec, "single_stream_ratio": l1 / run,
                  "batched_ratio": lc / ec, "scaling_cN_over_c1": lc / l1}))
PY
