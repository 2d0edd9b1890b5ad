"""End to end: a worker whose trainers run on a BLAS known to cripple fp32
marks its savings `baseline: degraded` with the reason, and the scheduler
leaves them out of fleet totals and savings metrics.

The BLAS is switched for one worker (and so its trainers) through
LD_LIBRARY_PATH, which libtorch's libblas.so.3 and libopenblas.so.0 resolve
through before the machine's alternatives; the alternatives stay untouched.

Run by CTest (label e2e); by hand:
  python3 tests/e2e/baseline_test.py --build-dir build [-k name] [--keep]
"""
import json
import os
import sys
import unittest
import urllib.request

import cluster
from cluster import Cluster

ARGS = None
LIBDIR = "/usr/lib/x86_64-linux-gnu"
# Debian's folders for each BLAS build (packages libopenblas0-pthread and
# libblas3, which scripts/setup.sh installs for these tests).
PTHREAD_OPENBLAS = os.path.join(LIBDIR, "openblas-pthread")
REFERENCE_BLAS = os.path.join(LIBDIR, "blas")


def scrape(address):
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


def metric(text, name, labels=""):
    """The value of series `name{labels}` in a Prometheus text page."""
    prefix = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no series {prefix} in:\n{text}")


SPEC = cluster.nano_spec("baseline", steps=8, precision="bf16-mixed",
                         savings="{baseline: probe, probe_steps: 4}")


class BaselineTest(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(self._testMethodName)

    def tearDown(self):
        cluster.finish(self, [self.cluster], ARGS.keep)

    def json(self, *args):
        return json.loads(self.cluster.cli(*args, "-o", "json", check=True).stdout)

    def run_job(self, env, threads=2):
        """Starts one worker with `env`, runs SPEC on it; returns the worker
        process, its entry in `workers -o json` and the job's savings."""
        c = self.cluster
        worker = c.start_worker("w", threads=threads, env=env)
        job_id = c.submit(SPEC)
        c.wait_state(job_id, ["succeeded"], timeout=300)
        workers = self.json("workers")
        entry = next(w for w in workers["workers"] if w["name"] == "w")
        return worker, entry, job_id

    def assert_degraded(self, env, reason_part):
        c = self.cluster
        worker, entry, job_id = self.run_job(env)
        caps = entry["capabilities"]
        reasons = caps["baseline_degradations"]
        self.assertTrue(any(reason_part in r for r in reasons), reasons)
        # The probed GEMM ceilings are in the JSON, degraded or not.
        rates = {r["dtype"]: r["flops_per_second"] for r in caps["rates"]}
        self.assertGreater(rates["fp32"], 0)
        self.assertIn("degraded", c.cli("workers", check=True).stdout)

        savings = self.json("savings", job_id)["jobs"][0]
        self.assertTrue(savings["baseline_degraded"], savings)
        self.assertIn(reason_part, savings["baseline_degraded_reason"])
        detail = c.cli("savings", job_id, check=True).stdout
        self.assertIn("degraded", detail)
        self.assertIn(reason_part, detail)

        fleet = self.json("savings")
        totals = {t["precision"]: t for t in fleet["totals"]}
        bf16 = totals["bf16-mixed"]
        self.assertEqual(int(bf16["degraded_jobs"]), 1)
        self.assertEqual(int(bf16["jobs"]), 0, "left out of the totals")
        self.assertIn("left out of these totals", c.cli("savings", check=True).stdout)

        self.assertEqual(metric(scrape(worker.metrics_address),
                                "halftime_worker_baseline_degraded"), 1)
        page = scrape(c.metrics_address)
        self.assertEqual(metric(page, "halftime_savings_degraded_jobs_total",
                                'precision="bf16-mixed"'), 1)
        self.assertEqual(metric(page, "halftime_savings_device_seconds_total",
                                'precision="bf16-mixed"'), 0)

    @unittest.skipUnless(os.path.exists(os.path.join(PTHREAD_OPENBLAS, "libblas.so.3")),
                         "libopenblas0-pthread is not installed")
    def test_pthread_openblas_worker_reports_degraded_savings(self):
        self.assert_degraded({"LD_LIBRARY_PATH": PTHREAD_OPENBLAS}, "pthreads build")

    @unittest.skipUnless(os.path.exists(os.path.join(REFERENCE_BLAS, "libblas.so.3")),
                         "libblas3 is not installed")
    def test_reference_blas_worker_reports_degraded_savings(self):
        self.assert_degraded({"LD_LIBRARY_PATH": REFERENCE_BLAS}, "reference BLAS")

    def test_too_many_threads_for_the_cpus_is_degraded(self):
        # taskset pins the worker, and so its trainers, to one CPU.
        wrapper = os.path.join(self.cluster.dir, "one-cpu-worker")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec taskset -c 0 {cluster.BIN['worker']} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        real = cluster.BIN["worker"]
        cluster.BIN["worker"] = wrapper
        try:
            worker, entry, job_id = self.run_job(None, threads=2)
        finally:
            cluster.BIN["worker"] = real
        reasons = entry["capabilities"]["baseline_degradations"]
        self.assertTrue(any("2 intra-op threads on 1 usable CPUs" in r for r in reasons),
                        reasons)

    def test_fair_worker_counts_in_the_totals(self):
        c = self.cluster
        worker, entry, job_id = self.run_job(None)
        caps = entry["capabilities"]
        self.assertEqual(caps["baseline_degradations"], [], caps)
        self.assertIn("OpenBLAS", caps["blas"])
        savings = self.json("savings", job_id)["jobs"][0]
        self.assertFalse(savings["baseline_degraded"], savings)
        totals = {t["precision"]: t for t in self.json("savings")["totals"]}
        self.assertEqual(int(totals["bf16-mixed"]["jobs"]), 1)
        self.assertEqual(int(totals["bf16-mixed"]["degraded_jobs"]), 0)
        self.assertEqual(metric(scrape(worker.metrics_address),
                                "halftime_worker_baseline_degraded"), 0)
        self.assertGreater(metric(scrape(worker.metrics_address),
                                  "halftime_worker_gemm_flops", 'dtype="fp32"'), 0)


if __name__ == "__main__":
    ARGS, rest = cluster.main_args("tests/e2e/python")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
