#!/usr/bin/env bash
# The HTTP API against gRPC on one corvid-server, and (LLAMA_SERVER set) against llama.cpp's
# llama-server on the same GGUF file, as ratios measured in one run.
#   http_vs_grpc[C]  = bench-load --http tokens/s / bench-load (gRPC) tokens/s, C in HTTP_CONC
#   vs_llama[C]      = corvid HTTP (and gRPC) tokens/s / llama-server tokens/s, and TTFT p99
#                      corvid / llama,
#                      C in PEER_CONC; same prompts, same max tokens, EOS ignored
# Every request's prompt is new: a numbered request tag before one of bench-load's built-in
# story openings, so neither server answers from a prompt cache it filled in an earlier run
# (llama-server keeps each slot's last prompt; corvid's prefix cache keeps whole blocks), as
# with users who each ask their own question. PROMPTS=repeat sends the openings unchanged:
# use it for random-weight (synthetic) files, whose output llama-server 34af94cd9ab2 often
# refuses after generating it ("The model produced output that does not match the expected
# Content-only format", HTTP 500) once the prompts vary.
# Usage: bench/compare-http.sh MODEL [MAX_TOKENS] [REQUESTS_PER_STREAM]
# Env: THREADS (both servers' threads; default each one's own), RUNS (default 3, medians),
#      HTTP_CONC (default "1 64"), PEER_CONC (default "1 4 16 32"),
#      LLAMA_SERVER=/path/to/llama-server (the peer, built outside the repository),
#      CORVID_FLAGS (more corvid-server flags, e.g. "--speculative 0": speculative decoding
#      is on by default and speeds up one stream wherever the output repeats the prompt).
# Runs of the two sides alternate, so the machine's noise falls on both. Prints one JSON object.
set -eu
model=${1:?usage: compare-http.sh MODEL [MAX_TOKENS] [REQUESTS_PER_STREAM]}
ntok=${2:-64}
per=${3:-2}
runs=${RUNS:-3}
bin=${CORVID_BIN:-build/bin}
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
field() { /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
maxc=64
for c in ${HTTP_CONC:-1 64} ${PEER_CONC:-1 4 16 32}; do [ "$c" -gt "$maxc" ] && maxc=$c; done

gport=$(free_port) hport=$(free_port)
"$bin/corvid-server" ${THREADS:+--threads $THREADS} ${CORVID_FLAGS:-} --listen "127.0.0.1:$gport" --http-listen "127.0.0.1:$hport" \
    --model "$model" --max-running "$maxc" --max-batch-tokens $((maxc > 256 ? maxc : 256)) --max-waiting 4096 \
    2>"$tmp/corvid.log" &
pids+=($!)
for _ in $(seq 1 600); do grep -q '"model ready"' "$tmp/corvid.log" && break; sleep 0.1; done

# A prompts file for one bench-load run: unique (tagged with a fresh number) unless PROMPTS=repeat.
prompts() {  # runs in $(...): the tag comes from the clock, not from a shell counter
    local n=$(($1 * per > 8 ? $1 * per : 8)) tag f i
    tag=$(date +%s%N | tail -c 8) f="$tmp/prompts.$tag"
    [ "${PROMPTS:-unique}" = repeat ] && { printf '%s\n' "Once upon a time" "The little dog" \
        "Lily and Ben went to the park" "One day, a bird" >"$f"; echo "$f"; return; }
    for i in $(seq 1 "$n"); do
        case $((i % 4)) in 0) o="Once upon a time" ;; 1) o="The little dog" ;;
                           2) o="Lily and Ben went to the park" ;; 3) o="One day, a bird" ;; esac
        echo "Story $tag.$i. $o"
    done >"$f"
    echo "$f"
}

# bench-load exits 3 when a request failed: the run still counts (its failures are in the
# JSON), and the first error goes to stderr.
failed_run() { echo "compare-http: $(field first_error <"$1")" >&2; }

# bench-load's figure for one run: load ADDR C FIELD [--http]
load() { "$bin/bench-load" --addr "$1" --prompts "$(prompts "$2")" --concurrency "$2" --requests $(($2 * per > 8 ? $2 * per : 8)) \
           --max-tokens "$ntok" --ignore-eos ${4:-} >"$tmp/run.json" || failed_run "$tmp/run.json"
         field "$3" <"$tmp/run.json"; }

out="$tmp/out.txt"
: >"$out"
for c in ${HTTP_CONC:-1 64}; do
    for _ in $(seq 1 "$runs"); do
        echo "grpc $c $(load 127.0.0.1:$gport "$c" output_tokens_per_s)" >>"$out"
        echo "http $c $(load 127.0.0.1:$hport "$c" output_tokens_per_s --http)" >>"$out"
    done
done
if [ -n "${LLAMA_SERVER:-}" ]; then
    lport=$(free_port)
    # One slot per stream of the highest concurrency, each with the context corvid gives a sequence.
    np=$maxc
    "$LLAMA_SERVER" -m "$model" --host 127.0.0.1 --port "$lport" -np "$np" -c $((np * 512)) \
        ${THREADS:+--threads $THREADS} >"$tmp/llama.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$lport/health" >/dev/null && break; sleep 0.2; done
    for c in ${PEER_CONC:-1 4 16 32}; do
        for _ in $(seq 1 "$runs"); do
            "$bin/bench-load" --addr "127.0.0.1:$hport" --http --prompts "$(prompts "$c")" --concurrency "$c" --requests $((c * per > 8 ? c * per : 8)) \
                --max-tokens "$ntok" --ignore-eos >"$tmp/c.json" || failed_run "$tmp/c.json"
            "$bin/bench-load" --addr "127.0.0.1:$gport" --prompts "$(prompts "$c")" --concurrency "$c" --requests $((c * per > 8 ? c * per : 8)) \
                --max-tokens "$ntok" --ignore-eos >"$tmp/g.json" || failed_run "$tmp/g.json"
            "$bin/bench-load" --addr "127.0.0.1:$lport" --http --prompts "$(prompts "$c")" --concurrency "$c" --requests $((c * per > 8 ? c * per : 8)) \
                --max-tokens "$ntok" --ignore-eos >"$tmp/l.json" || failed_run "$tmp/l.json"
            echo "corvid $c $(field output_tokens_per_s <"$tmp/c.json") $(field ttft_ms_p99 <"$tmp/c.json") $(field requests_failed <"$tmp/c.json")" >>"$out"
            echo "corvid_grpc $c $(field output_tokens_per_s <"$tmp/g.json") $(field ttft_ms_p99 <"$tmp/g.json") $(field requests_failed <"$tmp/g.json")" >>"$out"
            echo "llama $c $(field output_tokens_per_s <"$tmp/l.json") $(field ttft_ms_p99 <"$tmp/l.json") $(field requests_failed <"$tmp/l.json")" >>"$out"
        done
    done
fi
/usr/bin/python3 - "$model" "$ntok" "$out" <<'PY'
import json, statistics, sys
model, ntok, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [l.split() for l in open(path) if l.strip()]
def med(side, c, col=2):
    return statistics.median(float(r[col]) for r in rows if r[0] == side and int(r[1]) == c)
res = {"model": model, "max_tokens": ntok, "http_vs_grpc": {}, "vs_llama_server": {}}
for c in sorted({int(r[1]) for r in rows if r[0] == "grpc"}):
    g, h = med("grpc", c), med("http", c)
    res["http_vs_grpc"][str(c)] = {"grpc_tokens_per_s": g, "http_tokens_per_s": h, "ratio": round(h / g, 3)}
for c in sorted({int(r[1]) for r in rows if r[0] == "llama"}):
    ct, lt = med("corvid", c), med("llama", c)
    cp, lp = med("corvid", c, 3), med("llama", c, 3)
    gt, gp = med("corvid_grpc", c), med("corvid_grpc", c, 3)
    res["vs_llama_server"][str(c)] = {"corvid_tokens_per_s": ct, "llama_tokens_per_s": lt,
                                      "tokens_ratio": round(ct / lt, 3), "corvid_ttft_p99_ms": cp,
                                      "llama_ttft_p99_ms": lp, "ttft_p99_ratio": round(cp / lp, 3) if lp else None,
                                      "corvid_grpc_tokens_per_s": gt, "grpc_tokens_ratio": round(gt / lt, 3),
                                      "corvid_grpc_ttft_p99_ms": gp,
                                      "grpc_ttft_p99_ratio": round(gp / lp, 3) if lp else None,
                                      "failed": {"corvid": sum(int(r[4]) for r in rows if r[0] in ("corvid", "corvid_grpc") and int(r[1]) == c),
                                                 "llama": sum(int(r[4]) for r in rows if r[0] == "llama" and int(r[1]) == c)}}
print(json.dumps(res))
PY
