"""scripts/check_savings.py on recorded figures: the agreement computation
the demo prints, and its verdicts and exit codes."""
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(SOURCE, "scripts", "check_savings.py")
sys.path.insert(0, os.path.join(SOURCE, "scripts"))
import check_savings  # noqa: E402


class AgreementTest(unittest.TestCase):
    def test_ratio_and_relative_difference(self):
        real, diff = check_savings.agreement(1.90, 0.0700, 0.0389)
        self.assertAlmostEqual(real, 0.0700 / 0.0389)
        self.assertAlmostEqual(diff, abs(1.90 - real) / real)

    def test_non_positive_steps_are_refused(self):
        with self.assertRaises(ValueError):
            check_savings.agreement(1.5, 0.0, 0.04)


class ScriptTest(unittest.TestCase):
    def run_script(self, fp32_mean, job_mean, speedup, savings_text=None):
        d = tempfile.mkdtemp(prefix="check-savings-")
        paths = []
        for name, mean, precision in (("fp32", fp32_mean, "fp32"),
                                      ("job", job_mean, "bf16-mixed")):
            path = os.path.join(d, f"{name}.json")
            with open(path, "w") as f:
                json.dump({"precision": precision, "mean_step_seconds": mean}, f)
            paths.append(path)
        savings = os.path.join(d, "savings.json")
        with open(savings, "w") as f:
            f.write(savings_text if savings_text is not None else json.dumps(
                {"jobs": [{"speedup": speedup, "baseline_step_seconds": 0.25}]}))
        return subprocess.run([sys.executable, SCRIPT, *paths, savings],
                              capture_output=True, text=True)

    def test_the_demos_recorded_figures_agree(self):
        # Recorded by the demo: probe 0.0712 s/step; runs 0.0701 and 0.0389.
        r = self.run_script(0.0701, 0.0389, 0.0712 / 0.0390)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("agree: the ledger is", r.stdout)
        self.assertIn("-> 1.80x", r.stdout)

    def test_a_crippled_probe_disagrees(self):
        # The case: the probe measured 0.252 s/step, the runs 0.184
        # and 0.048 (3.83x); the ledger said 5.88x.
        r = self.run_script(0.184, 0.048, 5.88)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("DISAGREE", r.stdout)
        self.assertIn("53.4% from", r.stdout)

    def test_unreadable_savings_exit_2(self):
        r = self.run_script(0.07, 0.04, 1.8, savings_text='{"jobs": []}')
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot read the figures", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
