"""The peers benchmark's smoke mode (bench/peers/peers_bench.py --smoke):
analyticsd, the peers installed (ClickHouse, InfluxDB) and the raw SQLite
baseline each load 10,000 events and answer the same hourly counts, whose
sums the benchmark checks; every process is stopped and the temporary
directory removed afterwards."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import harness

SCRIPT = os.path.join(harness.REPO, "bench", "peers", "peers_bench.py")


class PeersBenchSmoke(unittest.TestCase):
    def test_smoke_every_system_loads_and_answers_the_same_sum(self):
        systems = ["ours", "sqlite"]
        for name, exe in (("influxdb", "influxd"), ("clickhouse", "clickhouse-server")):
            if shutil.which(exe):
                systems.append(name)
        tmp = tempfile.mkdtemp(prefix="peers-smoke-")
        try:
            r = subprocess.run([sys.executable, SCRIPT, "--smoke", "--binary",
                                harness.require_binary(), "--only", ",".join(systems),
                                "--tmp", tmp], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=300)
            out = r.stdout.decode("utf-8", "replace")
            self.assertEqual(r.returncode, 0, out[-3000:])
            self.assertIn("| 10,000 events | analyticsd |", out)
            for s in systems:
                self.assertIn("%s: 4 " % s, out)
            self.assertEqual(os.listdir(tmp), [], "temporary files left behind")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
