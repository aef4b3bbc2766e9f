#!/usr/bin/python3
"""/health latency on the REST bridge, idle and while two clients post 3.5 MB
JSON bodies with 200,000 keys (issue 14, point 8), in the same run.

Bodies over 64 KiB are decoded on the HTTP_DECODE_THREADS pool, so /health's
p99 under the two posters should stay within 2x its idle p99. Run with
--decode-threads 0 to see the bridge thread decode them itself.

Usage:
  /usr/bin/python3 bench/health_under_decode.py [--binary build/server/analyticsd]
      [--decode-threads N] [--seconds S]
"""

import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "adversarial"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))

import harness  # noqa: E402
from test_head_of_line import KeepAliveProbe, big_body, post  # noqa: E402


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def sample(port, seconds, interval=0.005):
    probe = KeepAliveProbe(port)
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        code, _ = probe.get("/health")
        out.append((time.perf_counter() - t0) * 1000)
        assert code == 200, code
        time.sleep(interval)
    probe.close()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=os.path.join(HERE, "..", "build", "server", "analyticsd"))
    p.add_argument("--decode-threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args()
    os.environ["ANALYTICSD"] = os.path.abspath(args.binary)
    server = harness.Server(env={"HTTP_DECODE_THREADS": str(args.decode_threads)},
                            log_level="warn")
    server.start()
    try:
        port = server.http_port
        body = big_body()
        sample(port, 1.0)  # warm up
        idle = sample(port, args.seconds)
        stop = threading.Event()
        posted = [0, 0]

        def poster(i):
            while not stop.is_set():
                post(port, body)
                posted[i] += 1

        threads = [threading.Thread(target=poster, args=(i,), daemon=True) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        busy = sample(port, args.seconds)
        stop.set()
        for t in threads:
            t.join()
        ip99, bp99 = percentile(idle, 0.99), percentile(busy, 0.99)
        print("HTTP_DECODE_THREADS=%d, body %.1f MB, %d bodies posted"
              % (args.decode_threads, len(body) / 1e6, sum(posted)))
        print("  /health idle:        n=%d p50 %.2f ms  p99 %.2f ms  max %.2f ms"
              % (len(idle), percentile(idle, 0.5), ip99, max(idle)))
        print("  /health two posters: n=%d p50 %.2f ms  p99 %.2f ms  max %.2f ms"
              % (len(busy), percentile(busy, 0.5), bp99, max(busy)))
        print("  p99 ratio busy/idle: %.2fx (target <= 2x)" % (bp99 / ip99))
    finally:
        server.stop()
        server.cleanup()


if __name__ == "__main__":
    main()
