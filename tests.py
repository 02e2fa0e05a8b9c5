"""The test suite: ``python -m unittest tests.py`` (or ``python tests.py``).

The cases live in ``testsuite/test_*.py``, one module per part of the package; this file
collects them so the one documented command runs everything.
"""

import logging
import os
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_tests(loader: unittest.TestLoader, standard_tests, pattern):
    # Log records a test does not capture go nowhere, instead of onto the test report.
    logging.getLogger().addHandler(logging.NullHandler())
    # Every test server is on loopback: keep a machine's proxy settings away from it.
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))
    suite = unittest.TestSuite()
    suite.addTests(loader.discover(str(HERE / "testsuite"), pattern="test_*.py",
                                   top_level_dir=str(HERE)))
    return suite


if __name__ == "__main__":
    sys.exit(unittest.main(module=__name__))
