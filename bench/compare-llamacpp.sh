#!/usr/bin/env bash
# Same file, same run: corvid's bench-decode, then llama.cpp's llama-bench (prompt 512,
# 128 generated tokens), printed as one JSON object with the ratios corvid / llama.cpp.
#   bench/compare-llamacpp.sh MODEL.gguf [THREADS] [RUNS]
# LLAMA_BENCH names llama.cpp's llama-bench (built beside the project, never in it).
set -eu
model=$1 threads=${2:-2} runs=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${CORVID_BIN:-$here/build/bin}/bench-decode
llama=${LLAMA_BENCH:-/work/peer/llama.cpp/build/bin/llama-bench}
ours=$("$bench" -m "$model" -t "$threads" --runs "$runs")
if [ ! -x "$llama" ]; then
    echo "compare-llamacpp: no llama-bench at $llama (set LLAMA_BENCH)" >&2
    echo "$ours"
    exit 0
fi
peer=$("$llama" -m "$model" -t "$threads" -p 512 -n 128 -r "$runs" -o json 2>/dev/null)
/usr/bin/python3 - "$ours" "$peer" <<'EOF'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def speed(kind):
    for t in peer:
        if (t["n_prompt"] > 0) == (kind == "prefill") and (t["n_gen"] > 0) == (kind == "decode"):
            return t["avg_ts"]
pp, tg = speed("prefill"), speed("decode")
ours.update({
    "llamacpp_prefill_tokens_per_s": pp,
    "llamacpp_decode_tokens_per_s": tg,
    "prefill_vs_llamacpp": ours["prefill_tokens_per_s"] / pp,
    "decode_vs_llamacpp": ours["decode_tokens_per_s"] / tg,
    "llamacpp_roofline_fraction": ours["weight_bytes_per_token"] * tg / 1e9 / ours["read_bandwidth_gbs"],
})
print(json.dumps(ours))
EOF
