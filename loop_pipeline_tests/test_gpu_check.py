"""scripts/gpu_check.py without a GPU: the threshold is selected on the calibration split only (the
test split never moves it), coverage and out-of-scope escalation are measured on the test split, and
the threshold code runs where neither polars nor scipy is installed (the GPU image)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from loop_pipeline.core.evaluation.thresholds import binomial_tail
from loop_pipeline.settings import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split(rng: np.random.Generator, n: int, oos_share: float = 0.1) -> dict[str, np.ndarray]:
    """Confident answers are mostly right; a tenth of the requests are out of scope, mostly escalated."""
    confidence = rng.beta(5, 0.7, size=n)
    oos = rng.random(n) < oos_share
    agree = rng.random(n) < confidence**0.4
    local = ~oos | (rng.random(n) < 0.2)  # an out-of-scope request answered in scope now and then
    agree &= ~(oos & local)  # answering an out-of-scope request in scope is wrong
    return {"confidence": confidence, "agree": agree, "local": local, "out_of_scope": oos}


def test_the_threshold_comes_from_the_calibration_split_and_coverage_from_the_test_split(gpu_check):
    rng = np.random.default_rng(0)
    calibration = _split(rng, 3000)
    test = _split(rng, 5000)
    result = gpu_check.select_and_measure(calibration, test, 0.95, 0.1)
    assert result["threshold"] is not None and result["certified_on_test"]
    assert result["threshold_selected_on"] == "calibration: CLINC150 val + oos_val"
    assert result["served_accuracy"] >= 0.95 and 0 < result["coverage_in_scope"] < 1
    assert (result["test_in_scope"], result["test_out_of_scope"]) == (int((~test["out_of_scope"]).sum()), int(test["out_of_scope"].sum()))
    assert result["out_of_scope_escalated"] >= result["out_of_scope_answered_out_of_scope"] > 0.5
    # Different test data never moves the threshold; it only changes what is measured with it.
    worse = _split(np.random.default_rng(1), 5000, oos_share=0.3)
    other = gpu_check.select_and_measure(calibration, worse, 0.95, 0.1)
    assert other["threshold"] == result["threshold"] and other["test_out_of_scope"] > result["test_out_of_scope"]


def test_the_exact_binomial_tail_matches_scipys(gpu_check):
    for k, n, p in [(0, 10, 0.5), (5, 10, 0.5), (95, 100, 0.95), (290, 300, 0.95), (2990, 3000, 0.99), (11, 10, 0.5)]:
        assert gpu_check.exact_binomial_tail(k, n, p) == pytest.approx(binomial_tail(k, n, p), rel=1e-9, abs=1e-300)


def test_the_threshold_code_runs_without_polars_or_scipy():
    code = (
        "import sys; sys.modules['polars'] = None; sys.modules['scipy'] = None\n"
        "import importlib.util, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('g', {str(SCRIPT)!r}); g = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(g)\n"
        "t = g.thresholds_module(); assert t.binomial_tail is g.exact_binomial_tail\n"
        "rng = np.random.default_rng(0); c = rng.random(400); a = rng.random(400) < c ** 0.1; l = np.ones(400, bool)\n"
        "print(t.choose_threshold((c, a, l), (c, a, l), 0.9, 0.1).selected)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # The same threshold as the package's own code with scipy.
    from loop_pipeline.core.evaluation.thresholds import choose_threshold

    rng = np.random.default_rng(0)
    c = rng.random(400)
    a = rng.random(400) < c**0.1
    local = np.ones(400, bool)
    expected = choose_threshold((c, a, local), (c, a, local), 0.9, 0.1).selected
    assert expected is not None and float(done.stdout.strip().splitlines()[-1]) == pytest.approx(expected)
