"""Fidelity measurement: multiset comparison, cut-sentence mapping, and the real val figures."""

import pytest

from moviefib.questions import SentenceRecord
from moviefib.questions.fidelity import canonical_rows, compare, leave_movies_out, truncated_sentences
from moviefib.questions.inputs import ImportedRow


def test_compare_counts_multiplicity():
    built = [("c", "s", "her"), ("c", "s", "door"), ("c", "s", "door")]
    real = [("c", "s", "her"), ("c", "s", "her"), ("c", "s", "door"), ("c", "s", "then")]
    f = compare(built, real, "x", {("c", "s", "door"): "NN"})
    assert (f.built, f.real, f.matched) == (3, 4, 2)
    assert f.precision == pytest.approx(2 / 3) and f.recall == pytest.approx(0.5)
    assert f.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert dict(f.missed) == {"her": 1, "then": 1} and dict(f.extra) == {"door": 1}
    assert dict(f.extra_tags) == {"NN": 1}
    assert compare([], [], "x").f1 == 0.0


def R(sentence, clip="0001_A_00.00.01.000-00.00.02.000"):
    return SentenceRecord(clip, "0001_A", "val", 1, 2, 1, 2, sentence)


def test_cut_sentences_map_to_full_sentence():
    full, cut = R("she looks at her hand and her ring"), R("she looks at her hand and")
    other_clip = R("she looks at her hand and", clip="0002_B_00.00.01.000-00.00.02.000")
    assert truncated_sentences([full, cut, other_clip]) == {(cut.clip_id, cut.sentence): full.sentence}
    rows = [ImportedRow(cut, "she looks at _____ hand and", "her", 0),
            ImportedRow(full, "she _____ at her hand and her ring", "looks", 1)]
    records, mapped_rows, n = canonical_rows([full, cut, other_clip], rows)
    assert records == [full, other_clip] and n == 1
    assert [r.record.sentence for r in mapped_rows] == [full.sentence, full.sentence]


def test_real_val_fidelity(shared_dir, spacy_tagger):
    from moviefib.questions import from_descriptions, read_fib_import

    folder = shared_dir / "data" / "moviefib_val"
    records = from_descriptions(folder / "LSMDC16_annos_val.csv").records
    real = read_fib_import(folder / "LSMDC16_annos_val_FIB.csv").records
    records, real, mapped = canonical_rows(records, real)
    assert mapped > 0
    unique = list(dict.fromkeys(r.sentence for r in records))
    tags = dict(zip(unique, spacy_tagger.tag(unique)))
    compat = leave_movies_out(records, real, tags, "compat")
    clean = leave_movies_out(records, real, tags, "clean")
    assert compat.f1 >= 0.97, (compat.precision, compat.recall)
    assert clean.recall < compat.recall  # clean does not blank her/him/then or IN-tagged particles
    assert dict(clean.missed).get("her", 0) > 500 and dict(compat.missed).get("her", 0) < 20
