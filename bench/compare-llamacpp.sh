#!/usr/bin/env bash
# Same file, same run: corvid's bench-decode and llama.cpp's llama-bench (prompt 512,
# 128 generated tokens), alternated run by run so that a change in machine load hits
# both, then one JSON object with corvid's medians, llama.cpp's medians and the ratios
# (speed, and peak RSS: bench-decode's own, llama-bench's from wait4).
#   bench/compare-llamacpp.sh MODEL.gguf [THREADS] [RUNS]
# LLAMA_BENCH names llama.cpp's llama-bench binary (built outside the project, never in
# it): LLAMA_BENCH=/path/to/llama.cpp/build/bin/llama-bench bench/compare-llamacpp.sh ...
# Without it the script says how to set it and runs corvid's bench-decode alone.
set -eu
model=$1 threads=${2:-2} runs=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${CORVID_BIN:-$here/build/bin}/bench-decode
llama=${LLAMA_BENCH:-}
if [ -z "$llama" ] || [ ! -x "$llama" ]; then
    if [ -z "$llama" ]; then
        echo "compare-llamacpp: LLAMA_BENCH is not set." >&2
    else
        echo "compare-llamacpp: LLAMA_BENCH=$llama is not an executable." >&2
    fi
    echo "  Set it to llama.cpp's llama-bench, built outside this repository:" >&2
    echo "    git clone https://github.com/ggml-org/llama.cpp && cmake -S llama.cpp -B llama.cpp/build \\" >&2
    echo "      && cmake --build llama.cpp/build --target llama-bench -j" >&2
    echo "    LLAMA_BENCH=\$PWD/llama.cpp/build/bin/llama-bench $0 $*" >&2
    echo "  Running corvid's bench-decode alone (no llamacpp_* fields)." >&2
    exec "$bench" -m "$model" -t "$threads" --runs "$runs"
fi
# llama-bench's output on stdout; its peak RSS (from wait4) appended to the file $1.
peer_run() {
    /usr/bin/python3 -c 'import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
out = p.stdout.read()
_, status, ru = os.wait4(p.pid, 0)
with open(sys.argv[1], "a") as f: f.write("%d\n" % (ru.ru_maxrss * 1024))
sys.stdout.write(out.decode().replace("\n", ""))' "$@"
}
rss=$(mktemp)
trap 'rm -f "$rss"' EXIT
ours=() peer=()
for _ in $(seq "$runs"); do
    ours+=("$("$bench" -m "$model" -t "$threads" --runs 1)")
    peer+=("$(peer_run "$rss" "$llama" -m "$model" -t "$threads" -p 512 -n 128 -r 1 -o json)")
done
/usr/bin/python3 - "$rss" "${#ours[@]}" "${ours[@]}" "${peer[@]}" <<'EOF'
import json, statistics, sys
n = int(sys.argv[2])
ours = [json.loads(s) for s in sys.argv[3:3 + n]]
peer = [json.loads(s) for s in sys.argv[3 + n:]]
peer_rss = [int(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs)
out = dict(ours[0])
for k in ("read_bandwidth_gbs", "prefill_tokens_per_s", "decode_tokens_per_s",
          "batch4_tokens_per_s", "batch16_tokens_per_s", "peak_rss_bytes"):
    out[k] = med([o[k] for o in ours])
out["runs"] = n
def speed(run, prefill):
    return next(t["avg_ts"] for t in run if (t["n_prompt"] > 0) == prefill and (t["n_gen"] > 0) != prefill)
pp, tg = med([speed(r, True) for r in peer]), med([speed(r, False) for r in peer])
wb, bw = out["weight_bytes_per_token"], out["read_bandwidth_gbs"]
out.update({
    "batch16_over_batch1": out["batch16_tokens_per_s"] / out["decode_tokens_per_s"],
    "decode_gbs": wb * out["decode_tokens_per_s"] / 1e9,
    "roofline_fraction": wb * out["decode_tokens_per_s"] / 1e9 / bw,
    "llamacpp_prefill_tokens_per_s": pp,
    "llamacpp_decode_tokens_per_s": tg,
    "llamacpp_roofline_fraction": wb * tg / 1e9 / bw,
    "prefill_vs_llamacpp": out["prefill_tokens_per_s"] / pp,
    "decode_vs_llamacpp": out["decode_tokens_per_s"] / tg,
    "llamacpp_peak_rss_bytes": med(peer_rss),
    "peak_rss_vs_llamacpp": out["peak_rss_bytes"] / med(peer_rss),
})
print(json.dumps(out))
EOF
