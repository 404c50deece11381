"""The evaluator on the real MovieFIB val questions (../shared): true answers 100 %, the majority
answer its share, each deliberate fault reported. Shares its checks with scripts/bench_evaluate.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_evaluate", ROOT / "scripts" / "bench_evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_val_checks(shared_dir, tmp_path):
    fib = shared_dir / "data" / "moviefib_val" / "LSMDC16_annos_val_FIB.csv"
    if not fib.is_file():
        pytest.skip(f"{fib} absent")
    out = _bench().real_val_checks(shared_dir, tmp_path)
    assert out["questions"] == 17568 and out["movies"] == 10
    assert out["true_answers_accuracy"] == 1.0 and out["true_answers_in_fib_order_accuracy"] == 1.0
    maj = out["majority"]
    assert maj["answer"] == "her" and maj["accuracy"] == maj["share"]
    assert 0.04 < maj["share"] < 0.06 and maj["ci"][0] < maj["share"] < maj["ci"][1]
    assert set(out["faulty_reported"]) == {"missing", "empty_answer", "multi_word", "unknown_id",
                                           "duplicate_same", "duplicate_conflict", "columns"}


def test_bench_speed_runs_small():
    out = _bench().bench_speed(3000, 1)
    assert out["questions"] == 3000 and 0.3 < out["accuracy"] < 0.9
    assert out["ci"][0] < out["accuracy"] < out["ci"][1]
