"""Runs this directory's pytest suite on one rank of a dlaunch job (ctest
starts it with dlaunch -np N). Exits 77 (ctest: skipped) when pytest or NumPy
is missing, naming them; scripts/setup.sh installs them."""

import os
import sys

missing = []
for module in ("pytest", "numpy"):
    try:
        __import__(module)
    except ImportError:
        missing.append(module)
if missing:
    if os.environ.get("DCOMM_RANK", "0") == "0":
        print("python tests skipped: missing %s (apt-get install python3-pytest python3-numpy "
              "python3-torch)" % ", ".join(missing))
    sys.exit(77)

import pytest  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", "--rootdir", here, here]
                     + sys.argv[1:]))
