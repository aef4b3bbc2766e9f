#!/usr/bin/python3
"""A/B throughput comparison of two analyticsd builds, interleaved.

Runs, for each round, the gRPC ingest rates (`ingest_bench --only
throughput`) and the REST ingest rates (`rest_bench --only ingest`) against
build A's and build B's analyticsd, alternating which goes first, with the
same benchmark clients (those of --bench, by default build B's). Prints
every round and, per measure, the median over the rounds of B/A: a change
that costs nothing stays near 1.00.

A and B may be the same build with different settings: --a-env and --b-env
(NAME=VALUE, repeatable) go into that side's server environment, and
--only grpc skips the REST rates. Field encryption's cost, for instance:

  /usr/bin/python3 bench/ab_throughput.py --a build --b build --only grpc \
      --b-env ENCRYPTED_FIELDS=properties.campaignId,properties.groupId

Usage:
  /usr/bin/python3 bench/ab_throughput.py --a OLD_BUILD --b NEW_BUILD [--rounds 3]
      [--seconds 5] [--bench BUILD] [--a-env NAME=VALUE]... [--b-env NAME=VALUE]...
      [--only grpc|rest]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys


def ingest_rates(bench, server, seconds, env=None):
    out = subprocess.run([os.path.join(bench, "bench", "ingest_bench"), "--server", server,
                          "--only", "throughput", "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True, env=env).stdout
    m = re.search(r"unary \(16 clients\) (\d+) ev/s; batches of 100 \(4 clients\) (\d+) ev/s; "
                  r"stream, batches of 100 \(2 streams\) (\d+) ev/s", out)
    if not m:
        raise SystemExit("ingest_bench printed no rates:\n" + out)
    return {"gRPC TrackEvent unary": float(m.group(1)),
            "gRPC TrackEvents x100": float(m.group(2)),
            "gRPC IngestEvents x100": float(m.group(3))}


REST_ROWS = {
    "REST POST /api/events": r"\| REST `POST /api/events`, in-process[^|]*\| (\d+) ev/s",
    "REST batch x100": r"\| REST `POST /api/events/batch`, 100 per request, in-process[^|]*\| "
                       r"(\d+) ev/s",
    "REST remote POST /api/events": r"\| REST `POST /api/events`, remote bridge[^|]*\| (\d+) ev/s",
    "REST remote batch x100": r"\| REST `POST /api/events/batch`, 100 per request, remote "
                              r"bridge[^|]*\| (\d+) ev/s",
}


def rest_rates(bench, server, seconds, env=None):
    out = subprocess.run([os.path.join(bench, "bench", "rest_bench"), "--server", server,
                          "--only", "ingest", "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True, env=env).stdout
    rates = {}
    for name, pattern in REST_ROWS.items():
        m = re.search(pattern, out)
        if not m:
            raise SystemExit("rest_bench printed no %s rate:\n%s" % (name, out))
        rates[name] = float(m.group(1))
    return rates


def measure(bench, build, seconds, extra_env=(), only=None):
    """The rates of one build; extra_env (NAME=VALUE strings) reach its server
    (the bench clients pass their environment on to the server they start)."""
    server = os.path.join(build, "server", "analyticsd")
    env = dict(os.environ)
    for kv in extra_env:
        name, _, value = kv.partition("=")
        env[name] = value
    rates = {}
    if only in (None, "grpc"):
        rates.update(ingest_rates(bench, server, seconds, env))
    if only in (None, "rest"):
        rates.update(rest_rates(bench, server, seconds, env))
    return rates


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, help="build directory of the baseline")
    p.add_argument("--b", required=True, help="build directory of the change")
    p.add_argument("--bench", help="build directory whose bench clients run (default: --b)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--a-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of A's server (repeatable)")
    p.add_argument("--b-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of B's server (repeatable)")
    p.add_argument("--only", choices=("grpc", "rest"), help="only the gRPC or the REST rates")
    args = p.parse_args()
    bench = args.bench or args.b
    ratios = {}
    for r in range(args.rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")
        got = {}
        for side in order:
            got[side] = measure(bench, getattr(args, side), args.seconds,
                                getattr(args, side + "_env"), args.only)
        print("round %d (%s first):" % (r + 1, order[0].upper()))
        for name in got["a"]:
            ratio = got["b"][name] / got["a"][name]
            ratios.setdefault(name, []).append(ratio)
            print("  %-30s A %8.0f  B %8.0f  B/A %.3f" % (name, got["a"][name], got["b"][name],
                                                          ratio))
        sys.stdout.flush()
    print("median B/A over %d rounds:" % args.rounds)
    for name, rs in ratios.items():
        print("  %-30s %.3f" % (name, statistics.median(rs)))


if __name__ == "__main__":
    main()
