"""Counting assertions for the Python integration tests: check() records a result and
prints failures; summary() prints the "N passed, N failed" line run.sh reads and returns
the exit status."""

_counts = {"passed": 0, "failed": 0}


def check(name, ok, detail=""):
    if ok:
        _counts["passed"] += 1
    else:
        _counts["failed"] += 1
        print(f"FAIL {name}: {detail}")


def summary():
    print(f"{_counts['passed']} passed, {_counts['failed']} failed")
    return 1 if _counts["failed"] else 0
