"""Evaluator: human-answer files (several annotators, both modes, skips) beside model accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_evaluate_data import make_dataset, question_rows

from moviefib.evaluate.errors import InputError, MissingInput
from moviefib.evaluate.human import PUBLISHED_HUMAN, compare_humans, read_human_answers
from moviefib.evaluate.key import load_key


@pytest.fixture()
def key(tmp_path):
    return load_key(make_dataset(tmp_path, {"val": question_rows()}), "val")


def _line(qid, answer, mode, annotator, seconds=2.5, skipped=False):
    return json.dumps(dict(question_id=qid, answer=answer, mode=mode, annotator=annotator,
                           seconds=seconds, skipped=skipped))


def _write(tmp_path, lines):
    p = tmp_path / "humans.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_published_figures_are_the_papers():
    assert {p.mode: p.accuracy for p in PUBLISHED_HUMAN} == {"text": 0.302, "video": 0.687}
    assert all("as cited" in p.source for p in PUBLISHED_HUMAN)


def test_modes_skips_agreement_and_model_on_same_questions(tmp_path, key):
    q, a = key.question_ids, key.answers
    lines = [
        # text: q0 by A (right), B ("Walks", normalised right), C skipped; q1 by A (wrong).
        _line(q[0], a[0], "text", "A"), _line(q[0], "Walks", "text", "B", 3.5),
        _line(q[0], None, "text", "C", None, True), _line(q[1], "later", "text", "A", 6.0),
        # video: q0 by A and B (both right), q2 by A (right), skip by B on q2.
        _line(q[0], a[0], "video", "A", 1.0), _line(q[0], a[0], "video", "B", 2.0),
        _line(q[2], a[2], "video", "A", 4.0), _line(q[2], "", "video", "B", 9.0, True),
    ]
    answers = read_human_answers(_write(tmp_path, lines), key)
    assert len(answers) == 8
    exact = np.zeros(len(key), bool)
    exact[[0, 2]] = True  # the model gets q0 and q2 right, q1 wrong
    res = {r.mode: r for r in compare_humans(key, answers, {"model": (exact, exact)},
                                             ["g"] * len(key))}
    text, video = res["text"], res["video"]
    assert (text.n_answers, text.n_skipped, text.n_questions, text.n_annotators) == (3, 1, 2, 3)
    assert (text.correct, text.correct_normalised) == (1, 2)
    # Model on the questions of the three text answers (q0, q0, q1): 2 of 3.
    assert text.model_accuracy["model"][0] == pytest.approx(2 / 3)
    assert (text.agreement.n_questions, text.agreement.n_pairs, text.agreement.agreeing_pairs) == (1, 1, 1)
    assert text.median_seconds == 3.5
    assert (video.n_answers, video.n_skipped, video.n_questions, video.correct) == (3, 1, 2, 3)
    assert video.accuracy == 1.0 and video.model_accuracy["model"][0] == 1.0
    assert video.agreement.rate == 1.0 and video.by_pos_group == {"g": (3, 1.0)}


def test_disagreement_counts_pairs(tmp_path, key):
    q = key.question_ids
    lines = [_line(q[0], w, "video", ann) for w, ann in [("walks", "A"), ("walks", "B"), ("runs", "C")]]
    res, = compare_humans(key, read_human_answers(_write(tmp_path, lines), key),
                          {"m": (np.zeros(len(key), bool),) * 2})
    assert (res.agreement.n_pairs, res.agreement.agreeing_pairs) == (3, 1)
    assert res.agreement.rate == pytest.approx(1 / 3)
    assert res.model_accuracy["m"] == (0.0, 0.0)


@pytest.mark.parametrize("line,reason", [
    ('{"question_id": "val-0000"}', "missing field"),
    ("not json", "malformed JSON"),
    ("[1, 2]", "expected a JSON object"),
    (_line("zzz", "a", "text", "A"), "unknown question id 'zzz'"),
    (_line("val-0000", "a", "audio", "A"), "mode must be"),
    (_line("val-0000", "a", "text", ""), "annotator"),
    (_line("val-0000", "a", "text", "A", -1), "seconds"),
    (_line("val-0000", "", "text", "A"), "empty answer on a line not marked skipped"),
    (_line("val-0000", 3, "text", "A"), "answer must be a string"),
    (json.dumps(dict(question_id="val-0000", answer="a", mode="text", annotator="A", seconds=1,
                     skipped="no")), "skipped must be true or false"),
])
def test_bad_lines_are_reported_with_their_line(tmp_path, key, line, reason):
    good = _line("val-0001", "then", "text", "A")
    with pytest.raises(InputError, match=rf"humans.jsonl:2: .*{reason}"):
        read_human_answers(_write(tmp_path, [good, line]), key)


def test_same_annotator_twice_and_empty_and_absent_files(tmp_path, key):
    lines = [_line("val-0001", "then", "text", "A"), _line("val-0001", "now", "text", "A")]
    with pytest.raises(InputError, match="line 1"):
        read_human_answers(_write(tmp_path, lines), key)
    with pytest.raises(InputError, match="no human answers"):
        read_human_answers(_write(tmp_path, [""]), key)
    with pytest.raises(MissingInput, match="no such human-answer file"):
        read_human_answers(tmp_path / "absent.jsonl", key)


def test_many_bad_lines_show_the_first_five(tmp_path, key):
    with pytest.raises(InputError) as err:
        read_human_answers(_write(tmp_path, ["x"] * 9), key)
    assert "9 bad line(s)" in str(err.value) and str(err.value).count("malformed JSON") == 5
