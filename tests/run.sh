#!/usr/bin/env bash
# Runs every unit test binary and every integration test, prints each runner's output
# (cmocka writes its closing lines on stderr, hence 2>&1), and ends with one line
# "N passed, N failed" that counts individual tests.
#
# cmocka binaries report their own counts. An integration script counts as one test
# unless it prints its own "N passed, N failed" line, whose counts are then used.
#
# Usage: tests/run.sh [PATTERN...]        (make test T='PATTERN...')
# With PATTERNs, only what one of them matches runs. A PATTERN is a shell glob matched
# anywhere in a name (as if written *PATTERN*):
#  - a binary of $CORVID_TESTBIN (test_engine) or a script of tests/integration
#    (test_server_health.py) whose name matches runs whole;
#  - in every other cmocka binary only the cases whose names match run. The binaries
#    are linked with tests/support/cmocka_filter.c, which wraps cmocka_run_group_tests
#    and keeps the cases that $CMOCKA_TEST_FILTER (comma-separated whole-name globs)
#    names; a binary with no such case skips its group setup, prints nothing and is
#    left out here. Python scripts have no case filter.
# e.g.  tests/run.sh engine threadpool     tests/run.sh 'server_*.py'
#       tests/run.sh test_cancel           (the cases of that name, in any binary)
# A PATTERN that matches nothing fails the run.
set -u
: "${CORVID_TESTBIN:?}" "${CORVID_BIN:?}"
export CORVID_TESTBIN CORVID_BIN
passed=0 failed=0 ran=0
failures=()
patterns=("$@")

matches() { # name: whether some PATTERN matches it (all do when none is given)
    [ ${#patterns[@]} -eq 0 ] && return 0
    local p
    for p in "${patterns[@]}"; do
        # shellcheck disable=SC2053
        [[ $1 == *$p* ]] && return 0
    done
    return 1
}

run_one() { # name filter command...
    local name=$1 filter=$2; shift 2
    local log
    log=$(mktemp)
    CMOCKA_TEST_FILTER=$filter timeout "${CORVID_TEST_TIMEOUT:-900}" "$@" >"$log" 2>&1
    local rc=$?
    # A case-filtered binary with no matching case took no part.
    if [ -n "$filter" ] && [ $rc -eq 0 ] && ! grep -qE '^\[==========\] (.*: )?Running [1-9]' "$log"; then
        rm -f "$log"
        return
    fi
    ran=$((ran + 1))
    echo "=== $name"
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

case_filter=""
for p in "${patterns[@]}"; do case_filter+="${case_filter:+,}*$p*"; done

for t in "$CORVID_TESTBIN"/test_*; do
    [ -x "$t" ] || continue
    if matches "$(basename "$t")"; then run_one "$(basename "$t")" "" "$t"
    elif [ -n "$case_filter" ]; then run_one "$(basename "$t")" "$case_filter" "$t"
    fi
done
here=$(cd "$(dirname "$0")" && pwd)
for t in "$here"/integration/test_*; do
    [ -f "$t" ] || continue
    matches "$(basename "$t")" || continue
    case "$t" in
        *.py) run_one "integration/$(basename "$t")" "" /usr/bin/python3 "$t" ;;
        *.sh) run_one "integration/$(basename "$t")" "" bash "$t" ;;
    esac
done

if [ ${#patterns[@]} -gt 0 ] && [ $ran -eq 0 ]; then
    echo "no test matches: ${patterns[*]}"
    failed=$((failed + 1))
fi
if [ ${#failures[@]} -gt 0 ]; then
    echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
