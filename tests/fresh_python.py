"""Code run in a fresh interpreter (for what a process reads once, such as its environment
variables) that imports the same lstm_ext as the tests, installed or built in place."""

import os
import subprocess
import sys

import lstm_ext

# The folder that holds the lstm_ext package the tests import, and this one (for helpers).
_PATHS = [
    os.path.dirname(os.path.dirname(os.path.abspath(lstm_ext.__file__))),
    os.path.dirname(os.path.abspath(__file__)),
]


def run_python(code, **environment):
    """Runs `code` with the variables `environment` added; returns the completed process."""
    prologue = f"import sys; sys.path[:0] = {_PATHS!r}\n"
    return subprocess.run(
        [sys.executable, "-c", prologue + code],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=300,
    )
