#!/usr/bin/env bash
# Runs every unit test binary and every integration test, prints each runner's output
# (cmocka writes its closing lines on stderr, hence 2>&1), and ends with one line
# "N passed, N failed" that counts individual tests.
#
# cmocka binaries report their own counts. An integration script counts as one test
# unless it prints its own "N passed, N failed" line, whose counts are then used.
set -u
: "${CORVID_TESTBIN:?}" "${CORVID_BIN:?}"
export CORVID_TESTBIN CORVID_BIN
passed=0 failed=0
failures=()

run_one() {
    local name=$1; shift
    local log
    log=$(mktemp)
    echo "=== $name"
    timeout "${CORVID_TEST_TIMEOUT:-900}" "$@" >"$log" 2>&1
    local rc=$?
    cat "$log"
    local p f
    p=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | awk '{s+=$4} END{print s+0}')
    f=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END{print s+0}')
    if ! grep -qE '^\[  (PASSED|FAILED)  \] [0-9]+ test' "$log"; then
        local line
        line=$(grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
        if [ -n "$line" ]; then
            p=$(sed -E 's/^([A-Za-z]+: )?([0-9]+) passed.*/\2/' <<<"$line")
            f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
        elif [ $rc -eq 0 ]; then p=1 f=0; else p=0 f=1; fi
    fi
    # A crash or non-zero exit with no failure counted still fails the run.
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
    [ "$f" -gt 0 ] && failures+=("$name (exit $rc)")
    rm -f "$log"
}

for t in "$CORVID_TESTBIN"/test_*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done
here=$(cd "$(dirname "$0")" && pwd)
for t in "$here"/integration/test_*; do
    [ -f "$t" ] || continue
    case "$t" in
        *.py) run_one "integration/$(basename "$t")" /usr/bin/python3 "$t" ;;
        *.sh) run_one "integration/$(basename "$t")" bash "$t" ;;
    esac
done

if [ ${#failures[@]} -gt 0 ]; then
    echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
