"""Evaluator metrics on hand-checkable inputs: normalisation, counts, breakdowns, bootstrap, lemma."""

from __future__ import annotations

import numpy as np
import pytest
from test_evaluate_data import make_dataset, question_rows

from moviefib.evaluate.bootstrap import (
    accuracy_intervals,
    paired_comparison,
    resample_totals,
    sentence_aggregates,
)
from moviefib.evaluate.errors import ResourceUnavailable
from moviefib.evaluate.key import load_key
from moviefib.evaluate.metrics import (
    BAND_OOV,
    INVALID,
    MISSING,
    breakdown,
    groupings,
    normalise,
    score,
    sentence_codes,
    summarise,
)


@pytest.mark.parametrize("raw,expected", [
    ("Her", "her"), ("her.", "her"), ('"door"', "door"), ("  DOOR!! ", "door"), ("someone's", "someone's"),
    ("ＤＯＯＲ", "door"), ("half-open", "half-open"), ("...", ""), ("Straße", "strasse"),
])
def test_normalise(raw, expected):
    assert normalise(raw) == expected


@pytest.fixture()
def key(tmp_path):
    counts = {"walks": 50, "opens": 40, "door": 30, "car": 5}
    return load_key(make_dataset(tmp_path, {"val": question_rows()}, answer_counts=counts), "val")


def test_counts_and_accuracies_by_hand(key):
    q = key.question_ids
    answers = dict(zip(q, key.answers))
    # q0 walks ok; q1 then -> "Then" (normalised only); q2 stops -> wrong; q3 missing; q4 invalid.
    answers[q[1]] = "Then"
    answers[q[2]] = "runs"
    del answers[q[3]]
    answers[q[4]] = ""
    out = score(key, answers, invalid_ids={q[4]})
    s = summarise(out)
    assert (s.n, s.correct, s.wrong, s.missing, s.invalid) == (15, 11, 2, 1, 1)
    assert s.correct_normalised == 12
    assert s.accuracy == pytest.approx(11 / 15) and s.accuracy_normalised == pytest.approx(12 / 15)
    assert out.status[3] == MISSING and out.status[4] == INVALID
    assert s.correct_lemma is None


def test_invalid_answer_never_counts_as_correct(key):
    answers = dict(zip(key.question_ids, key.answers))
    s = summarise(score(key, answers, invalid_ids={key.question_ids[0]}))
    assert s.correct == 14 and s.correct_normalised == 14 and s.invalid == 1


def test_breakdowns_by_hand(key):
    q = key.question_ids
    answers = dict(zip(q, key.answers))
    answers[q[0]] = "runs"       # walks, VBZ, ALPHA, how, band top-100
    answers[q[4]] = "car"        # door, NN, ALPHA, what, top-100
    answers[q[7]] = "bus"        # car, NN, BETA, what, top-100
    out = score(key, answers)
    groups = {g.name: g for g in groupings(key, ("question_type",))}
    assert list(groups) == ["pos_group", "answer_pos", "frequency_band", "movie", "label:question_type"]

    def table(name):
        return {g.group: (g.summary.n, g.summary.correct) for g in breakdown(groups[name], out)}

    assert table("pos_group") == {"noun": (4, 2), "verb": (7, 6), "adjective": (1, 1),
                                  "adverb/particle": (2, 2), "other": (1, 1)}
    assert table("answer_pos") == {"JJ": (1, 1), "NN": (4, 2), "PRP": (1, 1), "RB": (2, 2), "VBZ": (7, 6)}
    assert table("movie") == {"1001_ALPHA": (7, 5), "1002_BETA": (4, 3), "1003_GAMMA": (4, 4)}
    assert table("label:question_type") == {"how": (11, 10), "what": (4, 2)}
    # walks x1, opens x1, door x1, car x1 are training answers (all in the top-100); 11 are not.
    assert table("frequency_band") == {"top-100": (4, 1), BAND_OOV: (11, 11)}
    assert list(table("frequency_band")) == ["top-100", BAND_OOV]


def test_accuracy_by_a_label_column_is_the_breakdowns(key, tmp_path):
    """What the demo reports per question type: one call on the evaluation, no recount."""
    from moviefib.evaluate import evaluate_key, write_submission
    from moviefib.evaluate.errors import UsageError

    q = key.question_ids
    answers = dict(zip(q, key.answers))
    answers[q[0]] = "runs"   # a "how" question
    answers[q[4]] = "car"    # two "what" ones
    answers[q[7]] = "bus"
    path = tmp_path / "sub.tsv"
    write_submission(path, answers)
    ev = evaluate_key(key, [path], by=("question_type",), bootstrap=0)
    result = ev.submissions[0]
    assert result.summary.accuracy == pytest.approx(12 / 15)
    assert result.group_accuracy("question_type") == pytest.approx({"how": 10 / 11, "what": 2 / 4})
    assert result.group_accuracy("label:question_type") == result.group_accuracy("question_type")
    assert result.group_accuracy("movie") == pytest.approx({"1001_ALPHA": 5 / 7, "1002_BETA": 3 / 4,
                                                            "1003_GAMMA": 1.0})
    with pytest.raises(UsageError, match="no breakdown 'genre'.*by=\\('genre',\\)"):
        result.group_accuracy("genre")
    # One name is one column, not the columns q, u, e...
    assert evaluate_key(key, [path], by="question_type", bootstrap=0).submissions[0].group_accuracy(
        "question_type") == result.group_accuracy("question_type")
    twice = evaluate_key(key, [path], by=("question_type", "question_type"), bootstrap=0)
    assert twice.settings["by"] == ["question_type"]


def test_a_label_column_named_like_a_built_in_breakdown_is_not_taken_for_it(tmp_path):
    """And a built-in breakdown that is absent says why (the dataset has no answer counts)."""
    from moviefib.evaluate import evaluate_key, write_submission
    from moviefib.evaluate.errors import UsageError

    rows = question_rows()
    for i, row in enumerate(rows):
        row["pos_group"] = "odd" if i % 2 else "even"  # a label column of the dataset, not the tags' groups
    key = load_key(make_dataset(tmp_path, {"val": rows}), "val")
    path = tmp_path / "sub.tsv"
    write_submission(path, dict(zip(key.question_ids, key.answers)))
    result = evaluate_key(key, [path], by=("pos_group",), bootstrap=0).submissions[0]
    with pytest.raises(UsageError, match="'pos_group' is both a built-in one and a label column's"):
        result.group_accuracy("pos_group")
    assert set(result.group_accuracy("label:pos_group")) == {"odd", "even"}
    plain = evaluate_key(key, [path], bootstrap=0).submissions[0]  # not asked for: the built-in, unambiguous
    assert "noun" in plain.group_accuracy("pos_group")
    with pytest.raises(UsageError, match="no breakdown 'frequency_band'.*needs the training answers' counts, "
                                         "vocab/answer_counts.tsv"):  # not "evaluate with by=" (no column)
        plain.group_accuracy("frequency_band")


def test_frequency_bands_follow_rank(tmp_path):
    counts = {f"w{i:04d}": 10_000 - i for i in range(1200)}
    rows = question_rows()
    for i, r in enumerate(rows):
        r["answer"] = f"w{[0, 99, 100, 499, 500, 999, 1000, 1199][i % 8]:04d}" if i < 8 else "zzz"
    key = load_key(make_dataset(tmp_path, {"val": rows}, answer_counts=counts), "val")
    band = next(g for g in groupings(key) if g.name == "frequency_band")
    got = [band.labels[c] for c in band.codes[:9]]
    assert got == ["top-100", "top-100", "top-101-500", "top-101-500", "top-501-1000", "top-501-1000",
                   "rank>1000", "rank>1000", BAND_OOV]


def test_no_answer_counts_means_no_band_breakdown(tmp_path):
    key = load_key(make_dataset(tmp_path, {"val": question_rows()}), "val")
    assert "frequency_band" not in [g.name for g in groupings(key)]


def test_by_unknown_column_is_a_usage_error(key):
    from moviefib.evaluate.errors import UsageError

    with pytest.raises(UsageError, match="no such column.*question_type"):
        groupings(key, ("genre",))


def test_multinomial_resampling_matches_resampling_sentence_indices():
    rng = np.random.default_rng(1)
    n_q = rng.integers(1, 6, size=400)
    codes = np.repeat(np.arange(400), n_q)
    correct = rng.random(codes.size) < 0.4
    agg = sentence_aggregates(codes, correct)
    assert agg.shape == (400, 2) and agg[:, 0].sum() == codes.size and agg[:, 1].sum() == correct.sum()
    fast = resample_totals(agg, 4000, np.random.default_rng(2))
    fast_acc = fast[:, 1] / fast[:, 0]
    idx = np.random.default_rng(3).integers(0, 400, size=(4000, 400))
    naive_acc = agg[idx, 1].sum(1) / agg[idx, 0].sum(1)
    assert (fast[:, 0].mean() / codes.size) == pytest.approx(1, abs=0.01)
    assert fast_acc.mean() == pytest.approx(naive_acc.mean(), abs=0.003)
    assert fast_acc.std() == pytest.approx(naive_acc.std(), rel=0.08)


def test_interval_by_sentence_is_wider_when_questions_of_a_sentence_agree():
    # 300 sentences of 5 questions, each sentence all right or all wrong: by sentence, the effective
    # sample is 300, not 1500, so the interval must be about sqrt(5) wider than by question.
    codes = np.repeat(np.arange(300), 5)
    correct = np.repeat(np.arange(300) % 2 == 0, 5)
    by_sentence = accuracy_intervals(codes, {"exact": correct}, n_resamples=2000, seed=0)["exact"]
    by_question = accuracy_intervals(np.arange(1500), {"exact": correct}, n_resamples=2000, seed=0)["exact"]
    assert by_sentence.low < 0.5 < by_sentence.high
    ratio = (by_sentence.high - by_sentence.low) / (by_question.high - by_question.low)
    assert 1.8 < ratio < 2.7
    again = accuracy_intervals(codes, {"exact": correct}, n_resamples=2000, seed=0)["exact"]
    assert again == by_sentence


def test_paired_comparison():
    codes = np.repeat(np.arange(500), 2)
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.6
    same = paired_comparison(codes, a, a.copy(), names=("a", "b"), n_resamples=500)
    assert same.difference == 0 and same.p_value == 1.0 and same.a_only == same.b_only == 0
    b = a.copy()
    b[np.flatnonzero(a)[:150]] = False
    better = paired_comparison(codes, a, b, names=("a", "b"), n_resamples=500)
    assert better.difference == pytest.approx(0.15) and better.a_only == 150 and better.b_only == 0
    assert better.interval.low > 0.1 and better.p_value < 0.01
    worse = paired_comparison(codes, b, a, names=("b", "a"), n_resamples=500)
    assert worse.difference == pytest.approx(-0.15) and worse.interval.high < 0


def test_sentence_codes_group_questions_of_a_sentence(key):
    codes = sentence_codes(key)
    assert codes.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 5, 5, 5, 5]


def test_lemma_match(key):
    pytest.importorskip("spacy")
    q = key.question_ids
    answers = dict(zip(q, key.answers))
    answers[q[0]] = "walked"      # walks VBZ -> walk
    answers[q[4]] = "Doors"       # door NN -> door
    answers[q[2]] = "runs"        # stops: different lemma
    try:
        out = score(key, answers, lemma=True)
    except ResourceUnavailable as exc:  # the English model may be absent from a minimal install
        pytest.skip(str(exc))
    s = summarise(out)
    assert (s.correct, s.correct_normalised, s.correct_lemma) == (12, 12, 14)
    assert out.lemma[0] and out.lemma[4] and not out.lemma[2]


def test_resampling_sentences_with_huge_counts_does_not_overflow():
    agg = np.array([[3_000_000, 1_000_000, 5]], dtype=np.int64)
    totals = resample_totals(agg, 3, np.random.default_rng(0))
    assert totals.tolist() == [[3_000_000, 1_000_000, 5]] * 3
