#!/usr/bin/python3
"""Runs the adversarial suite (every test_*.py in this directory) against one
analyticsd binary: each test attacks the live server over its real sockets
and then checks that it still answers and that its memory came back.

Usage:
  /usr/bin/python3 tests/adversarial/run_all.py [--binary PATH] [-k PATTERN]
"""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    sys.dont_write_bytecode = True
    sys.path.insert(0, HERE)
    import adversary  # noqa: E402

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=adversary.harness.binary_path())
    p.add_argument("-k", dest="patterns", action="append", default=[])
    args = p.parse_args(argv)
    binary = os.path.abspath(args.binary)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print("run_all: no executable at %s" % binary, file=sys.stderr)
        return 2
    os.environ["ANALYTICSD"] = binary

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = ["*%s*" % k for k in args.patterns]
    suite = loader.discover(start_dir=HERE, pattern="test_*.py", top_level_dir=HERE)
    t0 = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    print("adversarial suite: ran %d in %.1f s" % (result.testsRun, time.monotonic() - t0))
    if result.testsRun == 0:
        print("adversarial suite: no test ran", file=sys.stderr)
        return 1
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
