"""Blank units, tag mapping, stop lists, vocabularies (no spaCy needed: tags are given)."""

import pytest

from moviefib.dataset import read_answer_counts
from moviefib.questions.vocab import read_vocab_file, select_vocab, write_counts
from moviefib.questions.words import (
    CLEAN_STOP_WORDS,
    COMPAT_STOP_WORDS,
    Word,
    align,
    candidates,
    first_found_inside_word,
    is_placeholder,
    passes_rule,
    select_blanks,
    vocab_key,
    word_spans,
)


def test_word_spans_strip_surrounding_punctuation_only():
    s = '"Hello," she says (quietly) -- t-shirt... don\'t'
    got = [(i, s[a:b]) for i, a, b in word_spans(s)]
    assert got == [(0, "Hello"), (1, "she"), (2, "says"), (3, "quietly"), (4, ""), (5, "t-shirt"), (6, "don't")]


def test_align_uses_main_token_of_each_word():
    s = "Someone's t-shirt doesn't fit; well-dressed"
    toks = [(0, 7, "NN"), (7, 9, "POS"), (10, 11, "NN"), (11, 12, "HYPH"), (12, 17, "NNS"), (18, 22, "VBZ"),
            (22, 25, "RB"), (26, 29, "VB"), (29, 30, ":"), (31, 35, "RB"), (35, 36, "HYPH"), (36, 43, "VBN")]
    words = align(s, toks)
    assert [(w.text, w.tag) for w in words] == [
        ("Someone's", "NN"), ("t-shirt", "NNS"), ("doesn't", "VBZ"), ("fit", "VB"), ("well-dressed", "VBN")]
    assert [(w.char_start, w.char_end) for w in words] == [(0, 9), (10, 17), (18, 25), (26, 29), (31, 43)]
    assert all(s[w.char_start:w.char_end] == w.text for w in words)


def W(text, tag, index=1):
    return Word(index, text, 0, len(text), tag)


@pytest.mark.parametrize("mode", ["clean", "compat"])
def test_placeholders_and_stop_words_never_blank(mode):
    for text in ("SOMEONE", "someone", "SOMEONE's", "Someone's", "UNK", "unk", "The", "is"):
        assert not passes_rule(W(text, "NN"), mode), text
    assert is_placeholder("SOMEONE's") and is_placeholder("UNK")


def test_tag_rule():
    assert passes_rule(W("door", "NN"), "clean")
    assert passes_rule(W("opens", "VBZ"), "clean")
    assert passes_rule(W("slowly", "RB"), "clean")
    assert passes_rule(W("red", "JJ"), "clean")
    assert not passes_rule(W("his", "PRP$"), "clean")
    assert not passes_rule(W("...", "NFP"), "clean")   # a tag starting with N that is not a noun
    assert not passes_rule(W("3", "CD"), "clean")


def test_modes_differ_as_documented():
    assert "then" in CLEAN_STOP_WORDS and "then" not in COMPAT_STOP_WORDS
    assert not passes_rule(W("then", "RB"), "clean") and passes_rule(W("then", "RB"), "compat")
    assert not passes_rule(W("over", "IN"), "clean") and passes_rule(W("over", "IN"), "compat")
    assert not passes_rule(W("her", "PRP$"), "clean") and passes_rule(W("her", "PRP$"), "compat")
    assert not passes_rule(W("his", "PRP$"), "compat")
    assert not passes_rule(W("are", "VBP"), "clean") and passes_rule(W("are", "VBP"), "compat")
    with pytest.raises(ValueError):
        passes_rule(W("door", "NN"), "loose")


def test_vocab_key_case_rules():
    assert vocab_key(Word(0, "People", 0, 6, "NNS"), "clean") == "people"
    assert vocab_key(Word(0, "people", 0, 6, "NNS"), "compat") == "People"
    assert vocab_key(Word(3, "people", 0, 6, "NNS"), "compat") == "people"


def test_select_blanks_with_vocabulary():
    words = [Word(0, "Someone", 0, 7, "NN"), Word(1, "opens", 8, 13, "VBZ"), Word(2, "the", 14, 17, "DT"),
             Word(3, "Door", 18, 22, "NN")]
    assert [w.text for w in select_blanks(words, "clean", None)] == ["opens", "Door"]
    assert [w.text for w in select_blanks(words, "clean", frozenset({"door"}))] == ["Door"]
    assert [w.text for w in select_blanks(words, "compat", frozenset({"door"}), "Someone opens the Door")] == []


def test_compat_skips_word_first_found_inside_another():
    s = "the sheriff kicks her"
    her = Word(3, "her", 18, 21, "PRP")
    assert first_found_inside_word(s, her)
    assert candidates([her], "compat", s) == []
    assert candidates([her], "clean", s) == []          # clean: her is PRP, never blanked
    kicks = Word(2, "kicks", 12, 17, "VBZ")
    assert candidates([kicks], "compat", s) == [kicks]
    assert not first_found_inside_word("her sheriff", Word(0, "her", 0, 3, "PRP"))


def test_select_vocab_threshold_and_top_k():
    counts = {"door": 5, "car": 5, "dog": 2, "cat": 1}
    assert select_vocab(counts) == ["car", "door", "dog", "cat"]  # by count, ties alphabetical
    assert select_vocab(counts, top_k=2) == ["car", "door"]
    assert select_vocab(counts, min_count=2) == ["car", "door", "dog"]
    assert select_vocab(counts, top_k=0) == []
    with pytest.raises(ValueError):
        select_vocab(counts, top_k=-1)


def test_vocab_file_roundtrip(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("Door\n\ncar\tignored\n", encoding="utf-8")
    assert read_vocab_file(f) == {"door", "car"}
    assert read_vocab_file(f, lower=False) == {"Door", "car"}
    (tmp_path / "empty.txt").write_text("\n")
    from moviefib.formats import FormatError

    with pytest.raises(FormatError, match="no word"):
        read_vocab_file(tmp_path / "empty.txt")
    with pytest.raises(FormatError, match="no such file"):
        read_vocab_file(tmp_path / "missing.txt")
    write_counts(tmp_path / "c.tsv", {"a": 1, "b": 3, "c": 3})
    assert (tmp_path / "c.tsv").read_text() == "b\t3\nc\t3\na\t1\n"
    assert list(read_answer_counts(tmp_path / "c.tsv").items()) == [("b", 3), ("c", 3), ("a", 1)]
