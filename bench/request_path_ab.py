#!/usr/bin/python3
"""A/B of the request path of two analyticsd binaries, rounds alternating
which goes first, both servers started once with a fresh data directory:

  ingest: one REST client posting batches of 1,000 events as bench/peers does
          (random times over 30 days, a UUID eventId, two properties), each
          round N events per server; ev/s and the server's CPU per event.
  unary:  one gRPC client calling TrackEvent (one event per call, a fresh
          eventId, two properties), N calls per server per round; p50 and
          the server's CPU per call.
  search: SearchEvents over gRPC and REST (GET /api/events/search) against
          20,000 events: a word in no event (the request's cost outside the
          query), a word in 10% of them and (gRPC) one event name of two, page
          of 50; p50 per round, and
          the server's CPU per request (its threads' user + system time,
          which the machine's other load inflates less than the latency).

Usage:
  /usr/bin/python3 bench/request_path_ab.py ingest A_BINARY B_BINARY [EVENTS [ROUNDS]]
  /usr/bin/python3 bench/request_path_ab.py unary A_BINARY B_BINARY [CALLS [ROUNDS]]
  /usr/bin/python3 bench/request_path_ab.py search A_BINARY B_BINARY [REQUESTS [ROUNDS]]
A binary may carry server settings: "path|NAME=VALUE,NAME=VALUE".
"""
import datetime
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))


def start(binary, port):
    extra = {}
    if "|" in binary:
        binary, kv = binary.split("|", 1)
        extra = dict(x.split("=", 1) for x in kv.split(","))
    d = tempfile.mkdtemp(prefix="ana-ab-")
    env = dict(os.environ, DATA_DIR=d, PORT=str(port), GRPC_PORT=str(port + 1),
               GRPC_HOST="127.0.0.1", RETENTION_DAYS="365", LOG_LEVEL="warn", **extra)
    p = subprocess.Popen([binary], env=env, stdout=open(os.path.join(d, "log"), "w"),
                         stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port)
            c.request("GET", "/health")
            c.getresponse().read()
            break
        except OSError:
            time.sleep(0.1)
    return p, d


def cpu_s(pid):
    f = open("/proc/%d/stat" % pid).read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def bodies(n, seed):
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    lo = now - 30 * 86400000
    names = ["message_sent", "delivered", "read", "clicked"]
    out = []
    for _ in range(n // 1000):
        ev = []
        for _ in range(1000):
            ts = rnd.randrange(lo, now - 1000)
            h = "%032x" % rnd.getrandbits(128)
            eid = "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
            iso = datetime.datetime.fromtimestamp(ts / 1000, datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ts % 1000)
            ev.append('{"eventId":"%s","eventType":"message","eventName":"%s","timestamp":"%s",'
                      '"properties":{"campaignId":"c%d","groupId":"g%d"}}'
                      % (eid, rnd.choice(names), iso, rnd.randrange(50), rnd.randrange(20)))
        out.append(('{"events":[' + ",".join(ev) + ']}').encode())
    return out


def post_all(port, bs):
    c = http.client.HTTPConnection("127.0.0.1", port)
    t = time.perf_counter()
    for body in bs:
        c.request("POST", "/api/events/batch", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit("batch answered %d" % r.status)
    return len(bs) * 1000 / (time.perf_counter() - t)


def ingest(servers, n, rounds):
    rate = {k: [] for k in servers}
    cpu = {k: [] for k in servers}
    for r in range(rounds):
        for k in (["A", "B"] if r % 2 == 0 else ["B", "A"]):
            p, port = servers[k]
            bs = bodies(n, 1000 * r + (k == "B"))
            c0 = cpu_s(p.pid)
            rate[k].append(post_all(port, bs))
            cpu[k].append((cpu_s(p.pid) - c0) / n * 1e6)
    for k in servers:
        print("%s ev/s %s (median %.0f); server CPU us/event %s (median %.1f)" % (
            k, " ".join("%.0f" % x for x in rate[k]), statistics.median(rate[k]),
            " ".join("%.1f" % x for x in cpu[k]), statistics.median(cpu[k])))
    ratios = [b / a for a, b in zip(rate["A"], rate["B"])]
    print("B/A ev/s per round %s, median %.2f" % (" ".join("%.2f" % x for x in ratios),
                                                  statistics.median(ratios)))


def unary(servers, n, rounds):
    import grpc
    import stubs
    from google.protobuf import struct_pb2
    pb, pbg = stubs.load().analytics["events"]
    rnd = random.Random(2)
    lat = {k: [] for k in servers}
    cpu = {k: [] for k in servers}
    for r in range(rounds):
        for k in (["A", "B"] if r % 2 == 0 else ["B", "A"]):
            p, port = servers[k]
            ch = grpc.insecure_channel("127.0.0.1:%d" % (port + 1))
            stub = pbg.EventServiceStub(ch)
            reqs = []
            for _ in range(n):
                h = "%032x" % rnd.getrandbits(128)
                props = struct_pb2.Struct()
                props.update({"campaignId": "c%d" % rnd.randrange(50),
                              "groupId": "g%d" % rnd.randrange(20)})
                reqs.append(pb.TrackEventRequest(event=pb.Event(
                    event_id="%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:]),
                    event_type="message", event_name=rnd.choice(["sent", "read"]),
                    properties=props)))
            stub.TrackEvent(reqs[0], timeout=10)
            t = []
            c0 = cpu_s(p.pid)
            for q in reqs[1:]:
                t0 = time.perf_counter()
                stub.TrackEvent(q, timeout=10)
                t.append(time.perf_counter() - t0)
            cpu[k].append((cpu_s(p.pid) - c0) / (n - 1) * 1e6)
            lat[k].append(statistics.median(t) * 1000)
            ch.close()
    for k in servers:
        print("%s TrackEvent p50 ms %s; server CPU us/call %s" % (
            k, " ".join("%.3f" % x for x in lat[k]), " ".join("%.0f" % x for x in cpu[k])))
    print("median B/A: p50 %.2f, server CPU per call %.2f" % (
        statistics.median(lat["B"]) / statistics.median(lat["A"]),
        statistics.median(cpu["B"]) / statistics.median(cpu["A"])))


def search(servers, n, rounds):
    import grpc
    import stubs
    pb, pbg = stubs.load().analytics["events"]
    rnd = random.Random(1)
    now = int(time.time() * 1000)
    for k, (p, port) in servers.items():
        c = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(40):
            ev = [{"eventType": "message", "eventName": rnd.choice(["sent", "read"]),
                   "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                              time.gmtime((now - rnd.randrange(86400000 * 20))
                                                          / 1000)),
                   "properties": {"w": "w%d" % rnd.randrange(10), "c": "c%d" % rnd.randrange(50)}}
                  for _ in range(500)]
            c.request("POST", "/api/events/batch", json.dumps({"events": ev}),
                      {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
    time.sleep(3)  # the free-text index catches up
    kinds = [("gRPC, no match", "zzzz", True), ("gRPC, word in 10%", "w3", True),
             ("REST, no match", "zzzz", False), ("REST, word in 10%", "w3", False),
             ("gRPC, eventName", None, True)]
    res = {name: {k: [] for k in servers} for name, _, _ in kinds}
    cpu = {name: {k: [] for k in servers} for name, _, _ in kinds}
    for r in range(rounds):
        for k in (["A", "B"] if r % 2 == 0 else ["B", "A"]):
            p, port = servers[k]
            ch = grpc.insecure_channel("127.0.0.1:%d" % (port + 1))
            stub = pbg.EventServiceStub(ch)
            hc = http.client.HTTPConnection("127.0.0.1", port)
            for name, q, over_grpc in kinds:
                lat = []
                c0 = cpu_s(p.pid)
                for _ in range(n):
                    t = time.perf_counter()
                    if over_grpc:
                        req = (pb.SearchEventsRequest(query=q, page_size=50) if q else
                               pb.SearchEventsRequest(event_name="read", page_size=50))
                        stub.SearchEvents(req, timeout=10)
                    else:
                        hc.request("GET", "/api/events/search?query=%s&pageSize=50" % q)
                        resp = hc.getresponse()
                        resp.read()
                    lat.append(time.perf_counter() - t)
                cpu[name][k].append((cpu_s(p.pid) - c0) / n * 1e6)
                res[name][k].append(statistics.median(lat[n // 10:]) * 1000)
            ch.close()
            hc.close()
    for name, _, _ in kinds:
        a, b = res[name]["A"], res[name]["B"]
        print("%-18s p50 ms A %s | B %s | median B/A %.2f" % (
            name, " ".join("%.3f" % x for x in a), " ".join("%.3f" % x for x in b),
            statistics.median(b) / statistics.median(a)))
    for name, _, _ in kinds:
        a, b = cpu[name]["A"], cpu[name]["B"]
        print("%-18s server CPU us/request A %s | B %s | median B/A %.2f" % (
            name, " ".join("%.0f" % x for x in a), " ".join("%.0f" % x for x in b),
            statistics.median(b) / statistics.median(a)))


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in ("ingest", "unary", "search"):
        raise SystemExit(__doc__)
    mode, a, b = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else {"ingest": 30000, "unary": 2000}.get(mode, 400)
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 6
    print("load average at start:", open("/proc/loadavg").read().strip())
    started = {"A": start(a, 18900), "B": start(b, 18910)}
    servers = {"A": (started["A"][0], 18900), "B": (started["B"][0], 18910)}
    try:
        {"ingest": ingest, "unary": unary, "search": search}[mode](servers, n, rounds)
    finally:
        for p, d in started.values():
            p.terminate()
            p.wait()
            shutil.rmtree(d, True)
    print("load average at end:", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
