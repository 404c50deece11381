"""``moviefib evaluate`` end to end: exit statuses, outputs, blind splits, --order-of, the thin script,
and the evaluator's import weight (no torch)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_evaluate_data import make_dataset, question_rows
from test_evaluate_submission import _fib_file

from moviefib.cli import main
from moviefib.evaluate import write_submission

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def ds(tmp_path):
    rows = question_rows()
    folder = make_dataset(tmp_path, {"val": rows, "test": question_rows(split="test")}, blind={"test"},
                          answer_counts={"walks": 9, "door": 4})
    truth = {r["question_id"]: r["answer"] for r in rows}
    return folder, truth, rows


def _run(capsys, *argv):
    code = main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_scores_and_writes_all_outputs(tmp_path, capsys, ds):
    folder, truth, _ = ds
    sub = write_submission(tmp_path / "a.tsv", truth)
    code, out, err = _run(capsys, folder, sub, "--out", tmp_path / "out", "--by", "question_type",
                          "--bootstrap", "200")
    assert code == 0, err
    assert "accuracy (exact)" in out and "100.00%" in out and "published, with video" in out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    table = folder / "data" / "val.parquet"
    assert metrics["dataset"]["sha256"][str(table)] == hashlib.sha256(table.read_bytes()).hexdigest()
    s = metrics["submissions"][0]
    assert s["sha256"] == hashlib.sha256(sub.read_bytes()).hexdigest()
    assert (s["accuracy"], s["correct"], s["missing"]) == (1.0, 15, 0)
    assert s["confidence_intervals"]["exact"]["n_resamples"] == 200
    assert {b for b in s["breakdowns"]} == {"pos_group", "answer_pos", "frequency_band", "movie",
                                            "label:question_type"}
    assert [p["accuracy"] for p in metrics["humans"]["published"]] == [0.302, 0.687]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| accuracy (exact) | 100.00% |" in report and str(sub) in report
    assert (tmp_path / "out" / "accuracy_by_pos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_invalid_submission_exits_3_and_writes_nothing(tmp_path, capsys, ds):
    folder, truth, _ = ds
    answers = dict(truth)
    answers.pop("val-0000")
    answers["val-0001"] = "two words"
    answers["bogus"] = "x"
    sub = write_submission(tmp_path / "a.tsv", answers)
    code, out, err = _run(capsys, folder, sub, "--out", tmp_path / "out")
    assert code == 3 and out == ""
    assert "missing: 1 x" in err and "multi_word: 1 x" in err and "unknown_id: 1 x" in err
    assert "line 16: unknown question id 'bogus'" in err and "hint: --allow-missing" in err
    assert "moviefib evaluate: error: invalid submission (3 problem(s))" in err
    assert not (tmp_path / "out").exists()


def test_allow_missing_and_allow_invalid(tmp_path, capsys, ds):
    folder, truth, _ = ds
    answers = dict(truth)
    answers.pop("val-0000")
    answers["val-0001"] = ""
    sub = write_submission(tmp_path / "a.json", answers)
    code, _, err = _run(capsys, folder, sub, "--allow-missing")
    assert code == 3 and "empty_answer" in err and "error: missing" not in err
    code, out, err = _run(capsys, folder, sub, "--allow-missing", "--allow-invalid", "--out", tmp_path / "o")
    assert code == 0, err
    s = json.loads((tmp_path / "o" / "metrics.json").read_text())["submissions"][0]
    assert (s["correct"], s["missing"], s["invalid"], s["wrong"]) == (13, 1, 1, 0)
    assert "tolerated: missing: 1 x" in out


@pytest.mark.parametrize("args,message,status", [
    (["nowhere", "x.tsv"], "no such dataset folder", 3),
    (["{ds}", "absent.tsv"], "no such submission file", 3),
    (["{ds}", "{sub}", "--split", "train"], "no split 'train'", 3),
    (["{ds}", "{sub}", "{sub}", "{sub}"], "at most two submissions", 2),
    (["{ds}", "{sub}", "--by", "genre"], "no such column", 2),
    (["{ds}", "{sub}", "--humans", "absent.jsonl"], "no such human-answer file", 3),
    (["{ds}", "{sub}", "--bootstrap", "-1"], "--bootstrap must be between 0 and 100,000", 2),
    (["{ds}", "{sub}", "--order-of", "absent_FIB.csv"], "no such FIB file", 3),
])
def test_usage_and_missing_input_errors(tmp_path, capsys, ds, args, message, status):
    """A bad option is a usage error (2); a missing input file, folder or split is invalid input (3)."""
    folder, truth, _ = ds
    sub = write_submission(tmp_path / "a.tsv", truth)
    argv = [a.format(ds=folder, sub=sub) for a in args]
    code, _, err = _run(capsys, *argv)
    assert code == status and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--bootstrap", "many", "ds", "s.tsv"])
    assert exc.value.code == 2


def test_malformed_human_file_exits_3(tmp_path, capsys, ds):
    folder, truth, _ = ds
    sub = write_submission(tmp_path / "a.tsv", truth)
    (tmp_path / "h.jsonl").write_text('{"question_id": "val-0000"}\n', encoding="utf-8")
    code, _, err = _run(capsys, folder, sub, "--humans", tmp_path / "h.jsonl")
    assert code == 3 and "h.jsonl:1: missing field(s)" in err


def test_blind_split_default_key_and_explicit_key(tmp_path, capsys, ds):
    folder, _, _ = ds
    rows = question_rows(split="test")
    sub = write_submission(tmp_path / "t.tsv", {r["question_id"]: r["answer"] for r in rows})
    code, out, err = _run(capsys, folder, sub, "--split", "test", "--bootstrap", "0")
    assert code == 0 and "100.00%" in out, err
    keys = folder.parent / "ds.keys" / "test.parquet"
    moved = tmp_path / "elsewhere.parquet"
    keys.rename(moved)
    code, _, err = _run(capsys, folder, sub, "--split", "test")
    assert code == 3 and "is blind" in err
    code, out, err = _run(capsys, folder, sub, "--split", "test", "--key", moved, "--bootstrap", "0")
    assert code == 0 and "100.00%" in out, err


def test_two_submissions_paired_and_humans(tmp_path, capsys, ds):
    folder, truth, rows = ds
    a = write_submission(tmp_path / "a.tsv", truth)
    worse = dict(truth, **{q: "nothing" for q in list(truth)[:5]})
    b = write_submission(tmp_path / "b.tsv", worse)
    humans = tmp_path / "h.jsonl"
    humans.write_text("".join(json.dumps(dict(question_id=r["question_id"], answer=r["answer"], mode=m,
                                              annotator=ann, seconds=1.0, skipped=False)) + "\n"
                              for r in rows[:6] for m, ann in (("text", "x"), ("video", "y"), ("video", "z"))),
                      encoding="utf-8")
    code, out, err = _run(capsys, folder, a, b, "--humans", humans, "--out", tmp_path / "o",
                          "--bootstrap", "300")
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    comp = m["comparisons"][0]
    assert (comp["a"], comp["b"], comp["metric"]) == ("a.tsv", "b.tsv", "exact")
    assert comp["difference"] == pytest.approx(5 / 15) and comp["a_only_correct"] == 5
    measured = {h["mode"]: h for h in m["humans"]["measured"]}
    assert measured["video"]["agreement"]["rate"] == 1.0 and measured["text"]["accuracy"] == 1.0
    # Humans answered rows 0-5; b is wrong on rows 0-4 of those.
    assert measured["text"]["model_accuracy_same_questions"]["b.tsv"]["accuracy"] == pytest.approx(1 / 6)
    assert "paired comparison" in out and "measured, video" in out


def test_order_of_plain_list(tmp_path, capsys, ds):
    folder, _, rows = ds
    fib = _fib_file(tmp_path, rows)
    plain = tmp_path / "answers.txt"
    plain.write_text("".join(r["answer"] + "\n" for r in rows), encoding="utf-8")
    code, out, err = _run(capsys, folder, plain, "--order-of", fib, "--bootstrap", "0")
    assert code == 0 and "100.00%" in out, err
    plain.write_text("".join(r["answer"] + "\n" for r in rows[:-1]), encoding="utf-8")
    code, _, err = _run(capsys, folder, plain, "--order-of", fib)
    assert code == 3 and "line_count" in err and "14 answer line(s) for 15 rows" in err


def test_unwritable_out_is_one_line(tmp_path, capsys, ds):
    folder, truth, _ = ds
    sub = write_submission(tmp_path / "a.tsv", truth)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(capsys, folder, sub, "--out", blocker / "sub", "--bootstrap", "0")
    assert code == 3 and "cannot write" in err


def test_script_and_no_torch(tmp_path, ds):
    folder, truth, _ = ds
    sub = write_submission(tmp_path / "a.tsv", truth)
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(folder), str(sub),
                          "--bootstrap", "50"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "100.00%" in res.stdout, res.stderr
    code = ("import sys; from moviefib.cli import main; "
            f"rc = main(['evaluate', {str(folder)!r}, {str(sub)!r}, '--bootstrap', '10']); "
            "heavy = [m for m in ('torch', 'datasets', 'spacy', 'matplotlib', 'av') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "HEAVY []" in res.stdout, res.stdout + res.stderr
