#!/usr/bin/env bash
# corvid-run --tokenize / --info on the committed stories260K model and a vocabulary-only
# GGUF, and hostile inputs: every bad file must end with a message and exit status 1,
# never a signal.
set -u
: "${CORVID_BIN:?}"
data=${CORVID_DATA:-$(cd "$(dirname "$0")/../data" && pwd)}
run="$CORVID_BIN/corvid-run"
model="$data/models/stories260K.gguf"
vocab="$data/vocab/ggml-vocab-deepseek-llm.gguf"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

check() { # name, condition result (0 = ok)
    if [ "$2" -eq 0 ]; then echo "ok   $1"; passed=$((passed + 1));
    else echo "FAIL $1"; failed=$((failed + 1)); fi
}

out=$("$run" -m "$model" --tokenize "Once upon a time")
check "stories260K prompt ids with BOS" "$([ "$out" = "1 403 407 261 378" ]; echo $?)"

out=$("$run" -m "$vocab" --tokenize "Hello world")
check "vocabulary-only file tokenizes (deepseek-llm, BOS added)" "$([ "$out" = "100000 17464 1843" ]; echo $?)"

out=$("$run" -m "$model" --info)
rc=$?
check "--info exits 0" "$rc"
for want in "architecture       llama" "layers             5" "kv heads           4" \
            "vocab size         512" "tensor types       F32 48" "chat template      none"; do
    check "--info shows '$want'" "$(grep -qF "$want" <<<"$out"; echo $?)"
done

# Hostile files: missing, empty, random bytes, truncated header, truncated data.
expect_fail() { # name, file, args...
    local name=$1 file=$2 rc err
    shift 2
    "$run" -m "$file" "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    err=$(cat "$tmp/err")
    check "$name: exit 1 with a message (rc $rc)" "$([ $rc -eq 1 ] && [ -n "$err" ]; echo $?)"
}
: >"$tmp/empty.gguf"
head -c 4096 /dev/urandom >"$tmp/random.gguf"
head -c 200 "$model" >"$tmp/header.gguf"
head -c 600000 "$model" >"$tmp/data.gguf"
expect_fail "missing file" "$tmp/nope.gguf" --tokenize hi
expect_fail "empty file" "$tmp/empty.gguf" --tokenize hi
expect_fail "random bytes" "$tmp/random.gguf" --tokenize hi
expect_fail "truncated header" "$tmp/header.gguf" --tokenize hi
expect_fail "truncated tensor data" "$tmp/data.gguf" --info
# No mode is a wrong command line: exit 2 with the usage.
"$run" -m "$model" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "no mode: exit 2 with the usage (rc $rc)" "$([ $rc -eq 2 ] && grep -q '^usage: corvid-run' "$tmp/err"; echo $?)"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
