#!/usr/bin/env bash
# corvid-quantize end to end: exit codes and messages, a real model through a mixed
# recipe, and synthetic files that are the same bytes for the same seed.
set -u
: "${CORVID_BIN:?}"
data=${CORVID_DATA:-$(cd "$(dirname "$0")/../data" && pwd)}
q="$CORVID_BIN/corvid-quantize"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
passed=0 failed=0
check() {  # check NAME COMMAND...: the command's status is the result
    local name=$1; shift
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $name"; fi
}

"$q" >/dev/null 2>"$dir/err"; rc=$?
check "no arguments is a usage error" test "$rc" -eq 2
check "usage is printed" grep -q '^usage: corvid-quantize' "$dir/err"

"$q" "$data/models/stories260K.gguf" "$dir/x.gguf" Q3_K 2>"$dir/err"; rc=$?
check "unknown type is a usage error" test "$rc" -eq 2
check "unknown type is named" grep -q "unknown type 'Q3_K'" "$dir/err"
check "nothing written for a bad type" test ! -e "$dir/x.gguf"

"$q" "$dir/missing.gguf" "$dir/x.gguf" Q8_0 2>"$dir/err"; rc=$?
check "missing input fails" test "$rc" -eq 1
check "missing input is named" grep -q 'missing.gguf' "$dir/err"

"$q" "$data/models/stories260K.gguf" "$dir/q4.gguf" Q4_0 2>"$dir/err"; rc=$?
check "stories260K to Q4_0" test "$rc" -eq 0
check "172-column ffn_down kept in F32 with a note" grep -q 'blk.0.ffn_down.weight (172 columns) -> F32' "$dir/err"
check "summary line" grep -q 'general.file_type 2' "$dir/err"

"$q" --list-shapes >"$dir/shapes"
check "shapes listed" grep -q '^tinyllama-1.1b' "$dir/shapes"

"$q" --synthetic tiny --type Q4_K_M --seed 42 "$dir/a.gguf" 2>/dev/null
"$q" --synthetic tiny --type Q4_K_M --seed 42 --threads 1 "$dir/b.gguf" 2>/dev/null
"$q" --synthetic tiny --type Q4_K_M --seed 43 "$dir/c.gguf" 2>/dev/null
check "synthetic: same seed, same bytes" cmp -s "$dir/a.gguf" "$dir/b.gguf"
check "synthetic: other seed, other bytes" bash -c "! cmp -s '$dir/a.gguf' '$dir/c.gguf'"

# The reduced shapes of each architecture feature load and generate in every type
# (phi3: fused QKV and gate-up, partial rope, long-rope factors; llama: rope_freqs,
# a sliding window); the real shapes are listed.
for shape in tiny-llama3 tiny-mistral tiny-phi3; do
    for type in F32 Q8_0 Q4_K_M; do
        "$q" --synthetic $shape --type $type "$dir/s.gguf" 2>/dev/null
        "$CORVID_BIN/corvid-run" -m "$dir/s.gguf" --prompt-ids 1,300,301,302 -n 4 --temp 0 -t 2 \
            >/dev/null 2>"$dir/err"
        check "synthetic $shape $type runs" test $? -eq 0
    done
done
for shape in llama3.2-1b mistral-7b phi-3-mini; do
    check "shape $shape listed" grep -q "^$shape " "$dir/shapes"
done

"$q" --synthetic nope --type Q8_0 "$dir/d.gguf" 2>"$dir/err"; rc=$?
check "unknown shape is a usage error" test "$rc" -eq 2
check "unknown shape is named" grep -q "unknown shape 'nope'" "$dir/err"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
