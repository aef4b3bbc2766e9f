#!/usr/bin/python3
"""Runs the analyticsd integration suite (every test_*.py in this directory).

Usage:
  /usr/bin/python3 tests/integration/python/run_all.py [--binary PATH] [-k PATTERN] [-q]

--binary defaults to $ANALYTICSD, else <repo>/build/server/analyticsd.
Exits 0 when every test passed (skips allowed), 1 on failures or errors,
2 when the binary is missing.
"""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    sys.dont_write_bytecode = True  # keep the source tree clean
    sys.path.insert(0, HERE)
    import harness  # noqa: E402  (needs HERE on sys.path)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=harness.binary_path(),
                   help="analyticsd to test (default: %(default)s)")
    p.add_argument("-k", dest="patterns", action="append", default=[],
                   help="only run tests whose id contains this substring (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="less output")
    p.add_argument("--failfast", action="store_true")
    args = p.parse_args(argv)

    binary = os.path.abspath(args.binary)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print("run_all: no executable at %s (build with: cmake -S . -B build && "
              "cmake --build build)" % binary, file=sys.stderr)
        return 2
    os.environ["ANALYTICSD"] = binary

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = ["*%s*" % k for k in args.patterns]
    suite = loader.discover(start_dir=HERE, pattern="test_*.py", top_level_dir=HERE)

    print("analyticsd integration suite: %s" % binary)
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(verbosity=1 if args.quiet else 2,
                                     failfast=args.failfast, buffer=False)
    result = runner.run(suite)
    secs = time.monotonic() - t0

    print()
    print("=" * 70)
    print("SUMMARY: ran %d in %.1f s: %d failed, %d errors, %d skipped, "
          "%d expected failures, %d unexpected successes"
          % (result.testsRun, secs, len(result.failures), len(result.errors),
             len(result.skipped), len(result.expectedFailures),
             len(result.unexpectedSuccesses)))
    for label, items in (("FAIL", result.failures), ("ERROR", result.errors)):
        for test, _ in items:
            print("  %-5s %s" % (label, test.id() if hasattr(test, "id") else test))
    print("RESULT: %s" % ("OK" if result.wasSuccessful() else "FAILED"))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
