#!/usr/bin/python3
"""Server CPU per event of a one-client REST import, two builds A/B.

The peers' synthetic events (bench/peers: 50 campaigns x 20 groups, four
event names, timestamps at random over the last 30 days, a client eventId
each), 1,000 per POST /api/events/batch, one client, into a fresh server of
build A, then of build B, alternating (A B B A A B ...) in one run. Per load:
the rate (events / wall time of the load), the server's CPU (utime + stime
of /proc/PID/stat) during the load and until it is quiescent (nothing
staged, the free-text index caught up), per event, and the CPU per thread
name (/proc/PID/task/*/comm) at the end, and the acknowledgement's latency
(each POST's round trip: p50, p99, max; a commit that waits for a lock shows
here). Prints every load and the medians.
With --search-every S, a second client searches the free text (GET
/api/events/search, a campaign's word, page of 50) every S seconds during the
load: the searches' latency (each waits for the events committed before it to
be moved and indexed) is printed too (p50, p90, max). --search-plain: the
searches have no free text instead (one event name, page of 50: they read
the events not yet moved in place). --env-a/--env-b: server settings of one
side only.

Usage: /usr/bin/python3 bench/import_cpu_ab.py --a OLD/analyticsd --b NEW/analyticsd
       [--events 200000] [--rounds 3] [--steps 1] [--env NAME=VALUE]...
       [--search-every 0.5 [--search-plain]] [--env-a NAME=VALUE]... [--env-b NAME=VALUE]...
--steps K: also print each K-th of a load (rate and CPU per thread per event
of that part alone): whether the cost grows with the store's size.
"""

import argparse
import datetime
import http.client
import os
import random
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))
sys.dont_write_bytecode = True

import harness  # noqa: E402

BATCH = 1000
NAMES = (("message_sent", 0.40), ("message_delivered", 0.36), ("message_read", 0.18),
         ("message_clicked", 0.06))
DAY_MS = 86400 * 1000
TICK = os.sysconf("SC_CLK_TCK")


def bodies(n, seed=21):
    """The peers benchmark's REST bodies (same format, same distribution)."""
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    lo, hi = now - 30 * DAY_MS, now - 1000
    out, cur = [], []
    for i in range(n):
        ts = rnd.randrange(lo, hi)
        k, acc, name = rnd.random(), 0.0, NAMES[-1][0]
        for nm, share in NAMES:
            acc += share
            if k < acc:
                name = nm
                break
        h = "%032x" % rnd.getrandbits(128)
        eid = "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
        t = datetime.datetime.fromtimestamp(ts / 1000, datetime.timezone.utc)
        cur.append('{"eventId":"%s","eventType":"message","eventName":"%s",'
                   '"timestamp":"%s.%03dZ","properties":{"campaignId":"c%d",'
                   '"groupId":"g%d"}}' % (eid, name, t.strftime("%Y-%m-%dT%H:%M:%S"), ts % 1000,
                                         rnd.randrange(50), rnd.randrange(20)))
        if len(cur) == BATCH or i == n - 1:
            out.append(('{"events":[' + ",".join(cur) + "]}").encode())
            cur = []
    return out


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def threads_cpu(pid):
    """{thread name: CPU seconds} summed over the threads of that name."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def metric(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rpartition(" ")[2])
    return total


def per_event(after, before, n):
    return {k: (v - before.get(k, 0.0)) * 1e6 / n for k, v in after.items()}


def step_line(side, done, n, secs, threads):
    th = ", ".join("%s %.1f" % kv for kv in sorted(threads.items(), key=lambda kv: -kv[1])
                   if kv[1] >= 0.5)
    print("  %s up to %d events: %.0f ev/s; per thread (us/event): %s"
          % (side, done, n / secs, th), flush=True)


def searches(port, every, stop, out, plain=False):
    """GET /api/events/search every `every` seconds until stop is set; the
    latencies (seconds) of those answered 200 into out["lat"], others counted."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    k = 0
    while not stop.wait(every):
        t = time.perf_counter()
        if plain:
            conn.request("GET", "/api/events/search?eventName=%s&pageSize=50"
                         % NAMES[k % len(NAMES)][0])
        else:
            conn.request("GET", "/api/events/search?query=c%d&pageSize=50" % (k % 50))
        r = conn.getresponse()
        r.read()
        k += 1
        if r.status == 200:
            out["lat"].append(time.perf_counter() - t)
        else:
            out["failed"] += 1
    conn.close()


def load(binary, reqs, n, env, steps=1, side="", search_every=0.0, search_plain=False):
    os.environ["ANALYTICSD"] = os.path.abspath(binary)
    server = harness.Server(log_level="warn", env=dict({"RETENTION_DAYS": 365}, **env))
    server.start()
    pid = server.proc.pid
    found = {"lat": [], "failed": 0}
    stop = threading.Event()
    searcher = None
    if search_every > 0:
        searcher = threading.Thread(target=searches,
                                    args=(server.http_port, search_every, stop, found,
                                          search_plain))
        searcher.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=600)
        c0 = cpu_s(pid)
        t0 = time.perf_counter()
        acks = []
        every = max(1, len(reqs) // steps) if steps > 1 else 0
        ts, th = t0, threads_cpu(pid)
        for i, body in enumerate(reqs):
            a0 = time.perf_counter()
            for _ in range(50):
                conn.request("POST", "/api/events/batch", body,
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                out = r.read()
                if r.status == 200:
                    break
                if r.status not in (429, 503):
                    raise RuntimeError("batch: %d %s" % (r.status, out[:300]))
                time.sleep(0.05)
            acks.append(time.perf_counter() - a0)
            if every and (i + 1) % every == 0:
                now, th_now = time.perf_counter(), threads_cpu(pid)
                part = every * BATCH
                step_line(side, (i + 1) * BATCH, part, now - ts, per_event(th_now, th, part))
                ts, th = now, th_now
        secs = time.perf_counter() - t0
        c1 = cpu_s(pid)
        conn.close()
        stop.set()
        if searcher:
            searcher.join()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if (metric(server.http_port, "ana_store_staged_events") == 0 and
                    metric(server.http_port, "ana_search_index_sequence") >=
                    metric(server.http_port, "ana_ingest_last_commit_sequence")):
                break
            time.sleep(0.2)
        c2 = cpu_s(pid)
        per_thread = threads_cpu(pid)
    finally:
        stop.set()
        if searcher:
            searcher.join()
        server.stop(timeout=120)
        server.cleanup()
    acks.sort()
    lat = sorted(found["lat"]) or [0.0]
    return {"rate": n / secs, "load_us": (c1 - c0) * 1e6 / n, "total_us": (c2 - c0) * 1e6 / n,
            "threads": {k: v * 1e6 / n for k, v in per_thread.items()},
            "ack_p50_ms": acks[len(acks) // 2] * 1e3,
            "ack_p99_ms": acks[min(len(acks) - 1, len(acks) * 99 // 100)] * 1e3,
            "ack_max_ms": acks[-1] * 1e3,
            "search_p50": lat[len(lat) // 2] * 1000, "search_p90": lat[len(lat) * 9 // 10] * 1000,
            "search_max": lat[-1] * 1000, "searches": len(found["lat"]),
            "search_failed": found["failed"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--env-a", action="append", default=[])
    ap.add_argument("--env-b", action="append", default=[])
    ap.add_argument("--search-every", type=float, default=0.0)
    ap.add_argument("--search-plain", action="store_true")
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    side_env = {"A": dict(env, **dict(kv.split("=", 1) for kv in args.env_a)),
                "B": dict(env, **dict(kv.split("=", 1) for kv in args.env_b))}
    reqs = bodies(args.events)
    res = {"A": [], "B": []}
    for r in range(args.rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        for side in order:
            x = load(args.a if side == "A" else args.b, reqs, args.events, side_env[side],
                     args.steps, side, args.search_every, args.search_plain)
            res[side].append(x)
            th = ", ".join("%s %.1f" % kv for kv in sorted(x["threads"].items(),
                                                          key=lambda kv: -kv[1]) if kv[1] >= 0.5)
            print("round %d %s: %.0f ev/s; CPU %.1f us/event during the load, %.1f until "
                  "quiescent; per thread (us/event): %s; ack ms p50 %.1f p99 %.1f max %.1f; "
                  "load %s"
                  % (r + 1, side, x["rate"], x["load_us"], x["total_us"], th, x["ack_p50_ms"],
                     x["ack_p99_ms"], x["ack_max_ms"], open("/proc/loadavg").read().split()[0]),
                  flush=True)
            if args.search_every > 0:
                print("round %d %s: %d searches during the load (%d failed): p50 %.0f ms, "
                      "p90 %.0f ms, max %.0f ms" % (r + 1, side, x["searches"], x["search_failed"],
                                                    x["search_p50"], x["search_p90"],
                                                    x["search_max"]), flush=True)
    keys = [("rate", "ev/s"), ("load_us", "CPU us/event (load)"),
            ("total_us", "CPU us/event (until quiescent)"),
            ("ack_p50_ms", "ack p50 ms"), ("ack_p99_ms", "ack p99 ms")]
    if args.search_every > 0:
        keys += [("search_p50", "search p50 ms"), ("search_p90", "search p90 ms"),
                 ("search_max", "search max ms")]
    for key, what in keys:
        a = statistics.median(x[key] for x in res["A"])
        b = statistics.median(x[key] for x in res["B"])
        print("median %s: A %.1f, B %.1f, B/A %.2f" % (what, a, b, b / a))


if __name__ == "__main__":
    main()
