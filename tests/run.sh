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
#
# Processes: each test runs under timeout(1), which puts it in a process group of its
# own, with CORVID_TEST_TAG=<unique> in its environment. When it has ended, a process
# still in that group or still carrying the tag is a leftover: it is killed and the
# test counts as failed, naming it. SIGINT, SIGTERM or SIGHUP to run.sh stop the
# running test the same way (SIGTERM to its group, SIGKILL after
# $CORVID_TEST_KILL_AFTER seconds) before run.sh exits.
set -u
: "${CORVID_TESTBIN:?}" "${CORVID_BIN:?}"
export CORVID_TESTBIN CORVID_BIN
passed=0 failed=0 ran=0
failures=()
times=() # "seconds name" per test that ran: the slowest are listed at the end (CI budget)
patterns=("$@")
kill_after=${CORVID_TEST_KILL_AFTER:-10}
cur_pid="" cur_tag="" cur_name="" cur_log="" seq=0

matches() { # name: whether some PATTERN matches it (all do when none is given)
    [ ${#patterns[@]} -eq 0 ] && return 0
    local p
    for p in "${patterns[@]}"; do
        # shellcheck disable=SC2053
        [[ $1 == *$p* ]] && return 0
    done
    return 1
}

# Processes of the test that still run: in its process group, or carrying its tag.
leftovers() { # pgid tag -> "pid args" lines
    local pids
    pids=$( {
        ps -e -o pid=,pgid=,stat= | awk -v g="$1" '$2 == g && $3 !~ /^Z/ {print $1}'
        grep -lzx "CORVID_TEST_TAG=$2" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3
    } | sort -un)
    local p
    for p in $pids; do
        [ "$p" = $$ ] && continue
        ps -o stat= -p "$p" 2>/dev/null | grep -q '^Z' && continue
        echo "$p $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null)"
    done
}

# Kills what is left of the test; prints the leftovers (after a short grace for
# processes that are already on their way out, such as a parent-death signal's).
reap() { # pgid tag
    local left i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        left=$(leftovers "$1" "$2")
        [ -z "$left" ] && return 0
        sleep 0.2
    done
    echo "$left"
    kill -KILL -- "-$1" 2>/dev/null
    local pid _
    while read -r pid _; do kill -KILL "$pid" 2>/dev/null; done <<<"$left"
    sleep 0.2
    return 0
}

on_signal() {
    trap - INT TERM HUP
    echo "run.sh: $1 received${cur_name:+ while running $cur_name}: stopping it"
    if [ -n "$cur_pid" ]; then
        kill -TERM "$cur_pid" 2>/dev/null # timeout passes it on to the whole group
        wait "$cur_pid" 2>/dev/null
        echo "=== $cur_name (interrupted)"
        cat "$cur_log"
        rm -f "$cur_log"
        local left
        left=$(reap "$cur_pid" "$cur_tag")
        [ -n "$left" ] && printf 'run.sh: killed what %s left running:\n%s\n' "$cur_name" "$left"
    fi
    echo "$passed passed, $((failed + 1)) failed"
    case $1 in INT) exit 130 ;; HUP) exit 129 ;; *) exit 143 ;; esac
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

run_one() { # name filter command...
    local name=$1 filter=$2; shift 2
    local log rc t0=$SECONDS
    log=$(mktemp)
    seq=$((seq + 1))
    cur_name=$name cur_tag="$$-$seq-$RANDOM" cur_log=$log
    CORVID_TEST_TAG=$cur_tag CMOCKA_TEST_FILTER=$filter \
        timeout -k "$kill_after" "${CORVID_TEST_TIMEOUT:-900}" "$@" >"$log" 2>&1 &
    cur_pid=$!
    wait "$cur_pid"
    rc=$?
    local left
    left=$(reap "$cur_pid" "$cur_tag")
    cur_pid="" cur_name=""
    # A case-filtered binary with no matching case took no part.
    if [ -n "$filter" ] && [ $rc -eq 0 ] && [ -z "$left" ] &&
        ! grep -qE '^\[==========\] (.*: )?Running [1-9]' "$log"; then
        rm -f "$log"
        return
    fi
    ran=$((ran + 1))
    times+=("$((SECONDS - t0)) $name")
    echo "=== $name ($((SECONDS - t0)) s)"
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
    local why="exit $rc"
    if [ -n "$left" ]; then
        printf 'LEFTOVER: %s left processes running (killed):\n%s\n' "$name" "$left"
        f=$((f + 1))
        why+="; left running: $(awk '{print $2}' <<<"$left" | xargs -n1 basename | sort -u | xargs)"
    fi
    passed=$((passed + p)); failed=$((failed + f))
    [ "$f" -gt 0 ] && failures+=("$name ($why)")
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
if [ ${#times[@]} -gt 0 ]; then
    echo "slowest: $(printf '%s\n' "${times[@]}" | sort -rn | head -n 10 | awk '{printf "%s%s %ss", (NR>1?", ":""), $2, $1}')"
fi
if [ ${#failures[@]} -gt 0 ]; then
    echo "failed: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
