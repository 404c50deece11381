"""Evaluator: reading and validating submissions, every validation case, and write_submission."""

from __future__ import annotations

import json

import pytest
from test_evaluate_data import make_dataset, question_rows

from moviefib.evaluate.key import load_key
from moviefib.evaluate.submission import (
    read_ordered_submission,
    read_submission,
    validate,
    write_submission,
)
from moviefib.formats import FIBRow, write_rows


@pytest.fixture()
def key(tmp_path):
    return load_key(make_dataset(tmp_path, {"val": question_rows()}), "val")


def _tsv(tmp_path, lines, name="s.tsv", header=True):
    text = ("question_id\tanswer\n" if header else "") + "".join(line + "\n" for line in lines)
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _all(key, **replace):
    answers = dict(zip(key.question_ids, key.answers))
    answers.update(replace)
    return [f"{q}\t{a}" for q, a in answers.items()]


def _check(key, path, **kw):
    return validate(read_submission(path), key, **kw)


def test_perfect_tsv_and_json_are_valid(tmp_path, key):
    rep = _check(key, _tsv(tmp_path, _all(key)))
    assert rep.ok and rep.counts == {} and rep.n_answered == len(key) and rep.format == "tsv"
    p = write_submission(tmp_path / "s.json", dict(zip(key.question_ids, key.answers)))
    rep = _check(key, p)
    assert rep.ok and rep.format == "json"


def test_bom_crlf_and_surrounding_spaces_are_accepted(tmp_path, key):
    p = tmp_path / "s.tsv"
    p.write_bytes(b"\xef\xbb\xbfquestion_id\tanswer\r\n" +
                  b"".join(f"{q}\t {a} \r\n".encode() for q, a in zip(key.question_ids, key.answers)))
    sub = read_submission(p)
    assert validate(sub, key).ok
    assert sub.answers[key.question_ids[0]] == key.answers[0]


def test_missing_ids_are_fatal_unless_allowed(tmp_path, key):
    lines = _all(key)
    p = _tsv(tmp_path, lines[:-3])
    rep = _check(key, p)
    assert not rep.ok and rep.fatal_kinds == ("missing",) and rep.counts["missing"] == 3
    assert {e.question_id for e in rep.examples["missing"]} == set(key.question_ids[-3:])
    rep = _check(key, p, allow_missing=True)
    assert rep.ok and rep.counts["missing"] == 3
    assert any("tolerated: missing: 3" in line for line in rep.describe())


def test_duplicates_same_and_conflicting_with_lines(tmp_path, key):
    q0, q1 = key.question_ids[:2]
    lines = _all(key) + [f"{q0}\t{key.answers[0]}", f"{q1}\tbanana"]
    rep = _check(key, _tsv(tmp_path, lines))
    assert rep.counts["duplicate_same"] == 1 and rep.counts["duplicate_conflict"] == 1
    same, = rep.examples["duplicate_same"]
    assert same.line == len(key) + 2 and "first at line 2" in same.message
    conflict, = rep.examples["duplicate_conflict"]
    assert conflict.line == len(key) + 3 and "'banana'" in conflict.message
    assert not rep.ok


def test_json_duplicate_keys_are_seen(tmp_path, key):
    body = ", ".join(f'"{q}": "{a}"' for q, a in zip(key.question_ids, key.answers))
    p = tmp_path / "s.json"
    p.write_text("{" + body + f', "{key.question_ids[0]}": "other"' + "}", encoding="utf-8")
    rep = _check(key, p)
    assert rep.counts == {"duplicate_conflict": 1}


def test_unknown_ids_are_counted_with_first_lines(tmp_path, key):
    extra = [f"nope-{i}\tword" for i in range(7)]
    rep = _check(key, _tsv(tmp_path, _all(key) + extra))
    assert rep.counts == {"unknown_id": 7} and rep.fatal_kinds == ("unknown_id",)
    assert [e.line for e in rep.examples["unknown_id"]] == list(range(len(key) + 2, len(key) + 7))
    assert any("... and 2 more" in line for line in rep.describe())


def test_empty_and_multi_word_answers_invalid_unless_allowed(tmp_path, key):
    q = key.question_ids
    p = _tsv(tmp_path, _all(key, **{q[0]: "", q[1]: "the door", q[2]: "  "}))
    rep = _check(key, p)
    assert rep.counts == {"empty_answer": 2, "multi_word": 1}
    assert set(rep.fatal_kinds) == {"empty_answer", "multi_word"}
    rep = _check(key, p, allow_invalid=True)
    assert rep.ok and rep.invalid_ids == {q[0], q[1], q[2]}


def test_multi_word_is_fine_where_the_true_answer_has_several_words(tmp_path):
    rows = question_rows()
    rows[0]["answer"] = "New York"
    key = load_key(make_dataset(tmp_path, {"val": rows}), "val")
    rep = _check(key, _tsv(tmp_path, _all(key, **{key.question_ids[0]: "new york"})))
    assert rep.ok


def test_wrong_header_and_wrong_columns(tmp_path, key):
    lines = _all(key)
    rep = _check(key, _tsv(tmp_path, ["id\tprediction", *lines], header=False))
    assert rep.counts == {"header": 1}
    assert rep.examples["header"][0].line == 1
    # No header at all: the first answer line is taken for a bad header, so its question goes missing.
    rep = _check(key, _tsv(tmp_path, lines, header=False))
    assert rep.counts == {"header": 1, "missing": 1}
    bad = lines[:]
    bad[3] = bad[3] + "\textra"
    bad[5] = bad[5].replace("\t", " ")
    rep = _check(key, _tsv(tmp_path, bad + [""]))
    assert rep.counts["columns"] == 3 and rep.counts["missing"] == 2
    assert [e.line for e in rep.examples["columns"]] == [5, 7, len(key) + 2]


def test_invalid_utf8_reports_the_line(tmp_path, key):
    p = tmp_path / "s.tsv"
    lines = [line.encode() for line in _all(key)]
    lines[2] = key.question_ids[2].encode() + b"\t\xff\xfe"
    p.write_bytes(b"question_id\tanswer\n" + b"\n".join(lines) + b"\n")
    rep = _check(key, p)
    assert rep.counts == {"encoding": 1, "missing": 1}
    assert rep.examples["encoding"][0].line == 4
    j = tmp_path / "s.json"
    j.write_bytes(b'{\n"a": "b",\n"c": "\xff"}')
    rep = _check(key, j)
    assert rep.counts["encoding"] == 1 and rep.examples["encoding"][0].line == 3


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_empty_file(tmp_path, key, content):
    p = tmp_path / "s.tsv"
    p.write_bytes(content)
    rep = _check(key, p, allow_missing=True)
    assert rep.counts == {"empty_file": 1} and not rep.ok


def test_malformed_json_and_wrong_types(tmp_path, key):
    p = tmp_path / "s.json"
    p.write_text('{\n  "a": "b",\n  "c": \n}', encoding="utf-8")
    rep = _check(key, p)
    assert rep.counts == {"json": 1} and rep.examples["json"][0].line == 4
    p.write_text('["a", "b"]', encoding="utf-8")
    assert _check(key, p).counts == {"json": 1}
    answers = dict(zip(key.question_ids, key.answers))
    answers[key.question_ids[0]] = 3
    answers[key.question_ids[1]] = {"x": "y"}
    p.write_text(json.dumps(answers), encoding="utf-8")
    rep = _check(key, p)
    assert rep.counts == {"type": 2, "missing": 2}
    assert "JSON number" in rep.examples["type"][0].message


def _fib_file(tmp_path, rows, extra=()):
    fib = []
    for r in rows:
        times = (r["start_aligned"], r["end_aligned"], r["start_extracted"], r["end_extracted"])
        fib.append(FIBRow(r["clip_id"], *times, r["sentence"], fill_in=r["question"], blank=r["answer"]))
    fib.extend(extra)
    path = tmp_path / "val_FIB.csv"
    write_rows(path, fib)
    return path


def test_order_of_fib_file_maps_rows_to_questions(tmp_path):
    rows = question_rows()
    # A repeated row (as in the real release) must map to two distinct questions, in order.
    rows.append(dict(rows[0], question_id="val-dup"))
    key = load_key(make_dataset(tmp_path, {"val": rows}), "val")
    fib = _fib_file(tmp_path, rows)
    p = tmp_path / "answers.txt"
    p.write_text("".join(r["answer"] + "\n" for r in rows), encoding="utf-8")
    sub = read_ordered_submission(p, fib, key)
    assert validate(sub, key).ok and sub.format == "list"
    assert sub.answers["val-dup"] == rows[0]["answer"] and sub.lines["val-dup"] == len(rows)


def test_order_of_line_count_and_unmatched_rows(tmp_path):
    rows = question_rows()
    key = load_key(make_dataset(tmp_path, {"val": rows}), "val")
    stray = FIBRow("1009_OTHER_00.00.01.000-00.00.02.000", 1.0, 2.0, 1.0, 2.0, "he runs",
                   fill_in="he _____", blank="runs")
    fib = _fib_file(tmp_path, rows, extra=[stray])
    p = tmp_path / "answers.txt"
    p.write_text("".join(r["answer"] + "\n" for r in rows), encoding="utf-8")
    rep = validate(read_ordered_submission(p, fib, key), key)
    assert rep.counts == {"line_count": 1}
    p.write_text("".join(r["answer"] + "\n" for r in rows) + "runs\n", encoding="utf-8")
    rep = validate(read_ordered_submission(p, fib, key), key)
    assert rep.counts == {"order_unmatched": 1}
    assert rep.examples["order_unmatched"][0].line == len(rows) + 1


def test_write_submission_rejects_what_tsv_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="tab or line break"):
        write_submission(tmp_path / "s.tsv", {"q1": "a\tb"})
    with pytest.raises(ValueError, match="must be strings"):
        write_submission(tmp_path / "s.tsv", {"q1": None})
    assert not (tmp_path / "s.tsv").exists()
    p = write_submission(tmp_path / "s.tsv", {"q1": "été"})
    assert p.read_text(encoding="utf-8") == "question_id\tanswer\nq1\tété\n"
