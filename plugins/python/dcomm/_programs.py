"""The dlaunch and dcomm-info commands of a pip-installed dcomm: pip puts these
console scripts on PATH; each runs the program the wheel bundles in dcomm/bin/
in its place (exec, so signals, exit status and /proc/self/exe are the
program's own)."""

import os
import sys


def _run(name):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", name)
    if not os.access(path, os.X_OK):
        sys.exit("%s: this dcomm package has no %s (a build without it, or the pure-Python "
                 "sources on PYTHONPATH): pip install the repository root, or run the "
                 "build tree's %s" % (name, path, name))
    os.execv(path, [path] + sys.argv[1:])


def dlaunch():
    _run("dlaunch")


def dcomm_info():
    _run("dcomm-info")
