"""corvid_venv: a PyPI package of tests/pypi-requirements.txt for an integration test.

`make pydeps` installs them into the venv $CORVID_VENV (default ~/.cache/corvid/venv,
made with --system-site-packages, so Debian's grpcio is there too). A test run by
/usr/bin/python3 calls need() first: when this python lacks the package, the test is
re-executed by the venv's python; when that lacks it too, the test prints its SKIP line
and exits. Import this before corvid_testlib, whose import makes a temp dir that a
re-execution would leave behind.
"""
import importlib
import os
import sys

VENV = os.environ.get("CORVID_VENV", os.path.expanduser("~/.cache/corvid/venv"))


def need(module, what):
    """The module, or no return: re-executed in the venv, or SKIP (what: the tests skipped)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        py = os.path.join(VENV, "bin", "python")
        if os.path.exists(py) and not os.environ.get("CORVID_IN_VENV"):
            os.execve(py, [py] + sys.argv, dict(os.environ, CORVID_IN_VENV="1"))
        print("SKIP %s: no `%s` package (run `make pydeps`)" % (what, module))
        print("0 passed, 0 failed")
        sys.exit(0)
