"""The shipped sample submission reproduces its expected metrics on the tiny synthetic dataset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "moviefib" / "evaluate" / "sample"


def _script():
    spec = importlib.util.spec_from_file_location("make_sample_submission",
                                                  ROOT / "scripts" / "make_sample_submission.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _close(got, want, path="metrics"):
    """Equal, floats to 1e-9, except bootstrap bounds (numpy's sampler may change between releases)."""
    if isinstance(want, dict):
        assert set(got) == set(want), f"{path}: keys {sorted(set(got) ^ set(want))}"
        for k in want:
            _close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        tol = 0.02 if ".confidence_intervals." in path and path.rsplit(".", 1)[-1] in ("low", "high", "std") \
            else 1e-9
        assert got == pytest.approx(want, abs=tol), path
    else:
        assert got == want, path


def test_sample_submission_reproduces_expected_metrics(tiny_dataset):
    script = _script()
    sub = SAMPLE / script.SUBMISSION
    expected = json.loads((SAMPLE / script.EXPECTED).read_text(encoding="utf-8"))
    got = script.expected_metrics(tiny_dataset, sub)
    _close(got, expected)
    s = got["submissions"][0]
    # The sample exercises every metric: wrong answers and normalised-only matches both occur.
    assert 0 < s["correct"] < s["correct_normalised"] < s["n"]


def test_sample_submission_is_what_the_script_writes(tiny_dataset, tmp_path):
    script = _script()
    assert script.main(["--dataset", str(tiny_dataset), "--out", str(tmp_path)]) == 0
    assert (tmp_path / script.SUBMISSION).read_bytes() == (SAMPLE / script.SUBMISSION).read_bytes()
