"""Bad-input corpus of the text inputs: ``moviefib build`` (descriptions, import, corpus, --activitynet),
``moviefib evaluate`` and ``load_dataset``. One parametrised case per bad input, each written on the fly.

Every case must end in a one-line error naming the file (and the line or JSON path where there is one),
the expected exit status, no traceback, and no output written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evaluate_data import make_dataset, question_rows

from moviefib.cli import EXIT_INVALID, EXIT_USAGE, main
from moviefib.dataset import DatasetError, load_dataset, read_answer_counts, read_table
from moviefib.evaluate import write_submission

CLIP = "3009_BATTLE_LOS_ANGELES_00.03.07.170-00.03.09.675"
TIMES = "00.03.07.170\t00.03.09.675\t00.03.07.170\t00.03.09.675"
GOOD_DESC = f"{CLIP}\t{TIMES}\tsomeone walks and then stops"
GOOD_FIB = f"{CLIP}\t{TIMES}\tsomeone walks\tsomeone _____\twalks"
DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "1" * 5000


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def _lines(path: Path, lines: list[str]) -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return path


# ---- build descriptions: (case id, lines of the file, expected words) ----
DESC_CASES = [
    ("malformed_id", [f"not_a_clip\t{TIMES}\tsomeone walks"], "malformed clip id"),
    ("three_digit_movie", [f"309_BATTLE_00.03.07.170-00.03.09.675\t{TIMES}\tsomeone walks"], "malformed clip id"),
    ("id_times_disagree", [f"3009_BATTLE_LOS_ANGELES_00.03.07.170-00.03.19.675\t{TIMES}\tsomeone walks"],
     "disagree with START_ALIGNED"),
    ("id_start_disagrees", [f"3009_BATTLE_LOS_ANGELES_00.03.05.170-00.03.09.675\t{TIMES}\tsomeone walks"],
     "disagree"),
    ("id_bad_time_text", [f"3009_BATTLE_00.03.07-00.03.09.675\t{TIMES}\tsomeone walks"], "time stamp"),
    ("id_slash", [f"3009_BATTLE/../../etc_00.03.07.170-00.03.09.675\t{TIMES}\ts"], "path separator"),
    ("id_backslash", [f"3009_BATTLE\\x_00.03.07.170-00.03.09.675\t{TIMES}\ts"], "path separator"),
    ("id_absolute", [f"/3009_BATTLE_00.03.07.170-00.03.09.675\t{TIMES}\ts"], "path separator"),
    ("id_control", [f"3009_BAT\x01TLE_00.03.07.170-00.03.09.675\t{TIMES}\ts"], "control character"),
    ("id_nul", [f"3009_BAT\x00TLE_00.03.07.170-00.03.09.675\t{TIMES}\ts"], "control character"),
    ("id_escape", [f"3009_BAT\x1b[31mTLE_00.03.07.170-00.03.09.675\t{TIMES}\ts"], "control character"),
    ("sentence_nul", [f"{CLIP}\t{TIMES}\tsomeone\x00walks"], "control character"),
    ("sentence_escape", [f"{CLIP}\t{TIMES}\tsomeone \x1b[2J walks"], "control character"),
    ("sentence_cr", [f"{CLIP}\t{TIMES}\tsomeone\rwalks"], "control character"),
    ("sentence_c1", [f"{CLIP}\t{TIMES}\tsomeone\x85walks"], "control character"),
    ("sentence_vertical_tab", [f"{CLIP}\t{TIMES}\tsomeone\x0bwalks"], "control character"),
    ("sentence_del", [f"{CLIP}\t{TIMES}\tsomeone\x7fwalks"], "control character"),
    ("time_nan", [f"{CLIP}\tnan\t00.03.09.675\t00.03.07.170\t00.03.09.675\ts"], "START_ALIGNED"),
    ("five_columns", [f"{CLIP}\t{TIMES}"], "expected 6 tab-separated columns"),
    ("second_line_bad", [GOOD_DESC, f"{CLIP}x\t{TIMES}\ts"], ":2:"),
    # Unicode digits: int() reads them as ASCII ones, so a mangled time passed as the same time.
    ("time_arabic_indic_digit", [f"{CLIP}\t00.03.0\u0667.170\t00.03.09.675\t00.03.07.170\t00.03.09.675\ts"],
     "malformed time stamp"),
    ("time_fullwidth_digit", [f"{CLIP}\t00.03.07.170\t00.03.09.675\t00.03.07.170\t00.03.0\uff19.675\ts"],
     "malformed time stamp"),
    ("id_arabic_indic_movie_id", [f"\u0663009_BATTLE_LOS_ANGELES_00.03.07.170-00.03.09.675\t{TIMES}\ts"],
     "malformed clip id"),
    ("id_arabic_indic_time", [f"3009_BATTLE_LOS_ANGELES_00.03.0\u0667.170-00.03.09.675\t{TIMES}\ts"],
     "malformed clip id"),
    ("id_inner_space", [f"3009_BATTLE LOS_ANGELES_00.03.07.170-00.03.09.675\t{TIMES}\ts"], "holds whitespace"),
    ("id_nbsp", [f"3009_BATTLE\u00a0LOS_ANGELES_00.03.07.170-00.03.09.675\t{TIMES}\ts"], "holds whitespace"),
    # The cut clip must hold the described segment (every real row does).
    ("extracted_starts_late", [f"{CLIP}\t00.03.07.170\t00.03.09.675\t00.03.08.000\t00.03.09.675\ts"],
     "does not cover ALIGNED"),
    ("extracted_ends_early", [f"{CLIP}\t00.03.07.170\t00.03.09.675\t00.03.07.170\t00.03.09.000\ts"],
     "does not cover ALIGNED"),
]


@pytest.mark.parametrize("lines,words", [c[1:] for c in DESC_CASES], ids=[c[0] for c in DESC_CASES])
def test_build_descriptions_bad_rows(tmp_path, capsys, lines, words):
    f = _lines(tmp_path / "LSMDC16_annos_training.csv", lines)
    code, err = _run(capsys, ["build", "descriptions", "-o", tmp_path / "out", f, "--no-progress"])
    assert code == EXIT_INVALID and words in err and str(f) in err
    assert "--errors skip" in err  # the hint names the real flag
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# ---- files and outputs given to every build form: (case id, how to make the bad argument, words, status) ----
def _dir_input(tmp):
    (tmp / "in.csv").mkdir()
    return {"input": tmp / "in.csv"}


def _loop(first: Path, *others: Path) -> Path:
    """A symbolic link loop: ``first`` -> each of ``others`` -> back to ``first``."""
    chain = [first, *others]
    for link, target in zip(chain, chain[1:] + chain[:1]):
        link.symlink_to(target.name)
    return first


def _existing_file_output(tmp):
    (tmp / "out").write_text("precious\n")
    return {"output": tmp / "out", "extra": ["--overwrite"]}


def _existing_folder_output(tmp):
    (tmp / "out").mkdir()
    return {"output": tmp / "out"}


def _output_under_file(tmp):
    (tmp / "afile").write_text("x")
    return {"output": tmp / "afile" / "out"}


FILE_CASES = [
    ("missing_input", lambda tmp: {"input": tmp / "absent.csv"}, "no such file", EXIT_INVALID),
    ("input_is_directory", _dir_input, "is a directory", EXIT_INVALID),
    ("input_symlink_loop", lambda tmp: {"input": _loop(tmp / "loop.csv")}, "symbolic link loop", EXIT_INVALID),
    ("input_two_link_loop", lambda tmp: {"input": _loop(tmp / "l1.csv", tmp / "l2.csv")}, "symbolic link loop",
     EXIT_INVALID),
    ("empty_input", lambda tmp: {"input": _lines(tmp / "e.csv", [])}, "", EXIT_INVALID),
    ("output_is_a_file", _existing_file_output, "existing file", EXIT_INVALID),
    ("output_exists", _existing_folder_output, "--overwrite", EXIT_INVALID),
    ("output_under_a_file", _output_under_file, "not a folder", EXIT_INVALID),
    ("bad_split_name", lambda tmp: {"split": ".."}, "bad split name", EXIT_USAGE),
    ("split_by_movie_nan", lambda tmp: {"extra": ["--split-by-movie", "train=nan"]}, "--split-by-movie",
     EXIT_USAGE),
    ("split_by_movie_path", lambda tmp: {"extra": ["--split-by-movie", "../x=1"]}, "--split-by-movie",
     EXIT_USAGE),
]
# Generic corpus files carry their split in each record (no SPLIT=FILE); import has no --split-by-movie.
_NOT_FOR = {"bad_split_name": {"corpus"}, "split_by_movie_nan": {"import"}, "split_by_movie_path": {"import"}}
FILE_PARAMS = [pytest.param(form, *c[1:], id=f"{c[0]}-{form}") for c in FILE_CASES
               for form in ("descriptions", "import", "corpus") if form not in _NOT_FOR.get(c[0], ())]


@pytest.mark.parametrize("form,make,words,status", FILE_PARAMS)
def test_build_files_and_outputs(tmp_path, capsys, form, make, words, status):
    good = {"descriptions": ("d.csv", GOOD_DESC), "import": ("d_FIB.csv", GOOD_FIB),
            "corpus": ("c.jsonl", json.dumps({"video": "v", "start": 0, "end": 1, "sentence": "A man runs.",
                                              "split": "train"}))}[form]
    spec = {"input": _lines(tmp_path / good[0], [good[1]]), "output": tmp_path / "new", "extra": []}
    spec.update(make(tmp_path))
    if form == "corpus" and spec["input"].name == "e.csv":
        spec["input"] = _lines(tmp_path / "e.jsonl", [])
    arg = f"{spec['split']}={spec['input']}" if "split" in spec else spec["input"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = _run(capsys, ["build", form, "-o", spec["output"], arg, "--no-progress", *spec["extra"]])
    assert code == status and words in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing replaced
    if (tmp_path / "out").is_file():
        assert (tmp_path / "out").read_text() == "precious\n"


# ---- build import: (case id, rows, words) ----
IMPORT_CASES = [
    ("two_blanks", [f"{CLIP}\t{TIMES}\tsomeone walks\t_____ _____\twalks"], "not more"),
    ("six_underscores", [f"{CLIP}\t{TIMES}\tsomeone walks\tsomeone ______\twalks"], "not more"),
    ("empty_answer", [f"{CLIP}\t{TIMES}\tsomeone walks\tsomeone _____\t "], "empty BLANK"),
    ("mismatch", [f"{CLIP}\t{TIMES}\tsomeone walks\tsomeone runs _____\twalks"], "does not reproduce"),
    ("fill_in_control", [f"{CLIP}\t{TIMES}\tsomeone walks\tsome\x1bone _____\twalks"], "FILL_IN: control"),
    ("answer_control", [f"{CLIP}\t{TIMES}\tsomeone walks\tsomeone _____\twa\x00lks"], "BLANK: control"),
    ("id_times_disagree", [f"3009_BATTLE_LOS_ANGELES_00.00.07.170-00.03.09.675\t{TIMES}\ts w\ts _____\tw"],
     "disagree"),
    ("seven_columns", [f"{CLIP}\t{TIMES}\tsomeone walks\tsomeone _____"], "expected 8"),
    # An answer holding whitespace could never be matched: submissions are one word.
    ("answer_two_words", [f"{CLIP}\t{TIMES}\tsomeone two words\tsomeone _____\ttwo words"], "holds whitespace"),
    ("answer_leading_space", [f"{CLIP}\t{TIMES}\tsomeone  walks\tsomeone _____\t walks"], "holds whitespace"),
    ("answer_nbsp", [f"{CLIP}\t{TIMES}\tsomeone wa\u00a0lks\tsomeone _____\twa\u00a0lks"], "holds whitespace"),
    ("id_arabic_indic_digit", [f"3009_BATTLE_LOS_ANGELES_00.03.0\u0667.170-00.03.09.675\t{TIMES}\ts w\ts _____\tw"],
     "malformed clip id"),
    ("extracted_not_covering", [f"{CLIP}\t00.03.07.170\t00.03.09.675\t00.03.08.000\t00.03.09.675\ts w\ts _____\tw"],
     "does not cover ALIGNED"),
    ("invalid_utf8", None, "invalid UTF-8"),
]


@pytest.mark.parametrize("lines,words", [c[1:] for c in IMPORT_CASES], ids=[c[0] for c in IMPORT_CASES])
def test_build_import_bad_rows(tmp_path, capsys, lines, words):
    f = tmp_path / "LSMDC16_annos_val_FIB.csv"
    if lines is None:
        f.write_bytes(GOOD_FIB.encode() + b"\n" + GOOD_FIB.encode().replace(b"walks", b"w\xffalks") + b"\n")
    else:
        _lines(f, lines)
    code, err = _run(capsys, ["build", "import", "-o", tmp_path / "out", f, "--no-progress"])
    assert code == EXIT_INVALID and words in err and str(f) in err, err
    assert not (tmp_path / "out").exists()


# ---- build corpus, JSON Lines: (case id, record fields to change, words) ----
JSONL_CASES = [
    ("start_nan", '"start": NaN', "start is NaN"),
    ("end_infinity", '"end": Infinity', "end is Infinity"),
    ("start_minus_infinity", '"start": -Infinity', "start is -Infinity"),
    ("end_overflow_float", '"end": 1e400', "out of range"),
    ("start_5000_digits", f'"start": {HUGE}', "integer of 5000 digits"),
    ("end_400_digit_int", f'"end": {"9" * 400}', "too large"),
    ("start_true", '"start": true', "JSON boolean"),
    ("start_string", '"start": "2.5"', "JSON string"),
    ("start_null", '"start": null', "null"),
    ("start_array", '"start": [0]', "JSON array"),
    ("start_negative", '"start": -1', "negative start"),
    ("start_after_end", '"start": 5', "not before end"),
    ("video_slash", '"video": "a/b"', "path separator"),
    ("video_dotdot", '"video": ".."', "not a name"),
    ("video_absolute", '"video": "/etc/passwd"', "path separator"),
    ("video_nul", '"video": "v\\u0000"', "control character"),
    ("video_number", '"video": 7', "video id must be a string"),
    ("sentence_nul", '"sentence": "A man\\u0000 runs."', "control character"),
    ("sentence_escape", '"sentence": "A man \\u001b[2J runs."', "control character"),
    ("sentence_number", '"sentence": 3', "sentence must be a string"),
    ("split_path", '"split": "../../x"', "split"),
    ("label_number", '"kind": 3', "label 'kind' must be a string"),
    ("label_nan", '"kind": NaN', "label 'kind'"),
    # Label names become Parquet columns.
    ("label_name_empty", '"": "x"', "label name '' is empty"),
    ("label_name_spaces", '" kind": "x"', "has whitespace around it"),
    ("label_name_control", '"a\\u0001b": "x"', "holds a control character"),
    ("label_name_pandas_index", '"__index_level_0__": "x"', "starts with '__'"),
    ("video_trailing_space", '"video": "v1 "', "has whitespace around it"),
    ("split_leading_space", '"split": " train"', "has whitespace around it"),
    ("segment_under_a_millisecond", '"end": 0.0004', "shorter than a millisecond"),
    ("segment_of_a_nanosecond", '"end": 1e-9', "shorter than a millisecond"),
    ("end_past_999_hours", '"end": 1e300', "largest time a clip id can write"),
]


def _jsonl_line(change: str) -> str:
    fields = {"video": '"v1"', "start": "0", "end": "2", "sentence": '"A man runs."', "split": '"train"'}
    name, _, value = change.partition(": ")
    fields[name.strip('"')] = value
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


@pytest.mark.parametrize("change,words", [c[1:] for c in JSONL_CASES], ids=[c[0] for c in JSONL_CASES])
def test_build_corpus_jsonl_bad_records(tmp_path, capsys, change, words):
    good = _jsonl_line('"video": "v0"')
    f = _lines(tmp_path / "c.jsonl", [good, _jsonl_line(change)])
    code, err = _run(capsys, ["build", "corpus", "-o", tmp_path / "out", f, "--no-progress"])
    assert code == EXIT_INVALID and words in err and f"{f}:2:" in err, err
    assert not (tmp_path / "out").exists()


JSONL_LINE_CASES = [
    ("deep_nesting", DEEP, "nested too deeply"),
    ("huge_integer_line", HUGE, "expected a JSON object"),
    ("array_line", "[1, 2]", "expected a JSON object"),
    ("malformed", '{"video": ', "malformed JSON"),
    ("missing_fields", '{"video": "v"}', "missing field"),
    ("repeated_key", '{"video": "v2", "video": "v9", "start": 0, "end": 2, "sentence": "A.", "split": "train"}',
     "key 'video' repeated in one JSON object"),
    ("repeated_key_in_label", ('{"video": "v2", "start": 0, "end": 2, "sentence": "A.", "split": "train", '
                               '"kind": "a", "kind": "b"}'), "key 'kind' repeated"),
]


@pytest.mark.parametrize("line,words", [c[1:] for c in JSONL_LINE_CASES], ids=[c[0] for c in JSONL_LINE_CASES])
def test_build_corpus_jsonl_bad_lines_strict_and_skip(tmp_path, capsys, line, words):
    good = _jsonl_line('"video": "v0"')
    f = _lines(tmp_path / "c.jsonl", [good, line])
    code, err = _run(capsys, ["build", "corpus", "-o", tmp_path / "out", f, "--no-progress"])
    assert code == EXIT_INVALID and words in err and f"{f}:2:" in err, err
    from moviefib.questions import read_generic

    got = read_generic(f, errors="skip")  # a bad line is a bad row: skip mode drops and reports it
    assert len(got.records) == 1 and got.problems[0].line == 2


# ---- build corpus, TSV: (case id, start, end, sentence/video override, words) ----
TSV_CASES = [
    ("start_nan", "nan", "2", None, "is not a decimal number"),
    ("end_inf", "0", "inf", None, "is not a decimal number"),
    ("end_infinity_word", "0", "Infinity", None, "is not a decimal number"),
    ("start_underscore_digits", "1_0", "20", None, "is not a decimal number"),
    ("end_overflow", "0", "1e400", None, "out of range"),
    ("start_words", "abc", "2", None, "is not a decimal number"),
    ("start_empty", "", "2", None, "is not a decimal number"),
    ("sentence_nul", "0", "2", ("sentence", "A\x00man"), "control character"),
    ("video_backslash", "0", "2", ("video", "a\\b"), "path separator"),
    # float() reads Unicode digits; a plain decimal is ASCII.
    ("start_arabic_indic_digit", "\u0660", "2", None, "is not a decimal number"),
    ("end_fullwidth_digit", "0", "\uff12.5", None, "is not a decimal number"),
    ("video_trailing_space", "0", "2", ("video", "v1 "), "has whitespace around it"),
]


@pytest.mark.parametrize("start,end,override,words", [c[1:] for c in TSV_CASES], ids=[c[0] for c in TSV_CASES])
def test_build_corpus_tsv_bad_rows(tmp_path, capsys, start, end, override, words):
    row = {"video": "v1", "start": start, "end": end, "sentence": "A man runs.", "split": "train"}
    if override:
        row[override[0]] = override[1]
    header = list(row)
    f = _lines(tmp_path / "c.tsv", ["\t".join(header), "v0\t0\t2\tA dog barks.\ttrain",
                                    "\t".join(row[k] for k in header)])
    code, err = _run(capsys, ["build", "corpus", "-o", tmp_path / "out", f, "--no-progress"])
    assert code == EXIT_INVALID and words in err and f"{f}:3:" in err, err


# ---- build corpus, whole files: (case id, file name, bytes, words) ----
_TSV_HEAD = "video\tstart\tend\tsentence\tsplit"
_TSV_ROW = "v1\t0\t2\tA man runs.\ttrain"
_JSONL_ROW = '{"video": "v1", "start": 0, "end": 2, "sentence": "A man runs.", "split": "train"}'
CORPUS_FILE_CASES = [
    ("tsv_repeated_column", "c.tsv", f"video\t{_TSV_HEAD}\nv0\t{_TSV_ROW}\n".encode(),
     "header names column(s) 'video' more than once (line 1)"),
    ("tsv_two_repeated_columns", "c.tsv", f"{_TSV_HEAD}\tsplit\tstart\n{_TSV_ROW}\ttest\t1\n".encode(),
     "'split', 'start' more than once"),
    ("tsv_header_only", "c.tsv", f"{_TSV_HEAD}\n".encode(), "holds no records"),
    ("jsonl_blank_lines_only", "c.jsonl", b"\n\n  \n", "holds no records"),
    ("jsonl_utf16_bom", "c.jsonl", (_JSONL_ROW + "\n").encode("utf-16"), "UTF-16 text (byte-order mark)"),
    ("jsonl_utf16_big_endian", "c.jsonl", b"\xfe\xff" + (_JSONL_ROW + "\n").encode("utf-16-be"),
     "UTF-16 text (byte-order mark)"),
    ("jsonl_utf32_bom", "c.jsonl", (_JSONL_ROW + "\n").encode("utf-32"), "UTF-32 text (byte-order mark)"),
    ("jsonl_utf16_no_bom", "c.jsonl", (_JSONL_ROW + "\n").encode("utf-16-le"), "NUL bytes all through it"),
    ("tsv_utf16_bom", "c.tsv", f"{_TSV_HEAD}\n{_TSV_ROW}\n".encode("utf-16"), "UTF-16 text"),
]


@pytest.mark.parametrize("name,data,words", [c[1:] for c in CORPUS_FILE_CASES],
                         ids=[c[0] for c in CORPUS_FILE_CASES])
def test_build_corpus_bad_files(tmp_path, capsys, name, data, words):
    f = tmp_path / name
    f.write_bytes(data)
    code, err = _run(capsys, ["build", "corpus", "-o", tmp_path / "out", f, "--no-progress"])
    assert code == EXIT_INVALID and words in err and f"{f}: " in err, err
    assert len(err.strip().splitlines()) == 1 and "--errors skip" not in err and not (tmp_path / "out").exists()


# ---- LSMDC files that are not UTF-8 text: one line for the file, not one per row ----
LSMDC_ENCODING_CASES = [
    ("descriptions_utf16_bom", "descriptions", "d.csv", GOOD_DESC, "utf-16", "UTF-16 text (byte-order mark)"),
    ("descriptions_utf32_bom", "descriptions", "d.csv", GOOD_DESC, "utf-32", "UTF-32 text (byte-order mark)"),
    ("descriptions_utf16_no_bom", "descriptions", "d.csv", GOOD_DESC, "utf-16-le", "NUL bytes all through it"),
    ("import_utf16_bom", "import", "d_FIB.csv", GOOD_FIB, "utf-16", "UTF-16 text (byte-order mark)"),
    ("import_utf16_no_bom", "import", "d_FIB.csv", GOOD_FIB, "utf-16-be", "NUL bytes all through it"),
]


@pytest.mark.parametrize("form,name,line,encoding,words", [c[1:] for c in LSMDC_ENCODING_CASES],
                         ids=[c[0] for c in LSMDC_ENCODING_CASES])
def test_build_lsmdc_not_utf8(tmp_path, capsys, form, name, line, encoding, words):
    f = tmp_path / name
    f.write_bytes(("\n".join([line] * 3) + "\n").encode(encoding))
    code, err = _run(capsys, ["build", form, "-o", tmp_path / "out", f"val={f}", "--no-progress"])
    assert code == EXIT_INVALID and f"{f}: {words}" in err and "save it as UTF-8" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# ---- split-naming flags must name a split of the inputs: (case id, form, flags, words) ----
SPLIT_FLAG_CASES = [
    ("import_answer_split", "import", ["--answer-split", "nope"], "--answer-split 'nope'"),
    ("import_answer_split_train_absent", "import", ["--answer-split", "train"], "--answer-split 'train'"),
    ("import_blind", "import", ["--blind", "nope"], "--blind 'nope'"),
    ("import_second_blind", "import", ["--blind", "val", "--blind", "test"], "--blind 'test'"),
    ("descriptions_vocab_split_no_limit", "descriptions", ["--vocab-split", "nope", "--no-vocab-limit"],
     "--vocab-split 'nope'"),
    ("descriptions_vocab_split", "descriptions", ["--vocab-split", "nope"], "--vocab-split 'nope'"),
    ("descriptions_blind", "descriptions", ["--blind", "nope"], "--blind 'nope'"),
    ("corpus_vocab_split_no_limit", "corpus", ["--vocab-split", "nope", "--no-vocab-limit"],
     "--vocab-split 'nope'"),
    ("corpus_blind_after_split_by_movie", "corpus", ["--split-by-movie", "a=1", "--blind", "val"],
     "--blind 'val'"),
]


@pytest.mark.parametrize("form,flags,words", [c[1:] for c in SPLIT_FLAG_CASES], ids=[c[0] for c in SPLIT_FLAG_CASES])
def test_build_split_flags_name_a_given_split(tmp_path, capsys, form, flags, words):
    if form == "corpus":
        arg = _lines(tmp_path / "c.jsonl", [_JSONL_ROW.replace('"train"', '"val"')])
    else:
        arg = f"val={_lines(tmp_path / 'f.csv', [GOOD_DESC if form == 'descriptions' else GOOD_FIB])}"
    code, err = _run(capsys, ["build", form, "-o", tmp_path / "out", arg, "--no-progress", *flags])
    splits = "a" if "--split-by-movie" in flags else "val"
    assert code == EXIT_USAGE and f"{words} names no split of the inputs (splits: {splits})" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# ---- build corpus --activitynet: (case id, file text, words) ----
def _anet(ts="[[0, 5]]", duration="10.0", video="v_a", sentence='"A man runs."'):
    return f'{{"{video}": {{"duration": {duration}, "timestamps": {ts}, "sentences": [{sentence}]}}}}'


ANET_CASES = [
    ("start_nan", _anet(ts="[[NaN, 5]]"), "video v_a segment 0: start is NaN"),
    ("end_infinity", _anet(ts="[[0, Infinity]]"), "video v_a segment 0: end is Infinity"),
    ("end_overflow", _anet(ts="[[0, 1e999]]"), "out of range"),
    ("start_string", _anet(ts='[["2.5", 5]]'), "start is a JSON string"),
    ("start_true", _anet(ts="[[true, 5]]"), "start is a JSON boolean"),
    ("start_5000_digits", _anet(ts=f"[[{HUGE}, 5]]"), "integer of 5000 digits"),
    ("duration_words", _anet(duration='"abc"'), "duration is a JSON string"),
    ("duration_nan", _anet(duration="NaN"), "duration is NaN"),
    ("segment_not_pair", _anet(ts="[[1]]"), "segment 0: a timestamp must be a pair [start, end], not a list of 1"),
    ("segment_triple", _anet(ts="[[0, 1, 2]]"), "must be a pair [start, end], not a list of 3"),
    ("segment_flat_number", _anet(ts="[1]"), "must be a pair [start, end], not a JSON number"),
    ("segment_object", _anet(ts='[{"start": 0, "end": 1}]'), "must be a pair [start, end], not a JSON object"),
    ("duration_negative", _anet(duration="-5.0"), "duration -5.0 is not positive"),
    ("duration_zero", _anet(duration="0"), "duration 0.0 is not positive"),
    ("repeated_video", _anet() [:-1] + ', "v_a": {"duration": 3, "timestamps": [[0, 1]], "sentences": ["B."]}}',
     "key 'v_a' repeated in one JSON object"),
    ("repeated_duration", _anet(duration="10.0, \"duration\": 99"), "key 'duration' repeated"),
    ("no_videos", "{}", "holds no records"),
    ("utf16_bom", None, "UTF-16 text (byte-order mark); save it as UTF-8"),
    ("video_control", _anet(video="v\\u0007a"), "control character"),
    ("video_slash", _anet(video="../v"), "path separator"),
    ("sentence_nul", _anet(sentence='"A man\\u0000"'), "control character"),
    ("deep_nesting", DEEP, "nested too deeply"),
    ("not_json", "{'v': 1}", "malformed JSON"),
    ("top_level_list", "[1, 2]", "expected an object"),
    ("lists_differ", '{"v": {"duration": 3, "timestamps": [[0, 1]], "sentences": []}}', "same length"),
    ("invalid_utf8", None, "invalid UTF-8"),
]


@pytest.mark.parametrize("text,words", [c[1:] for c in ANET_CASES], ids=[c[0] for c in ANET_CASES])
def test_build_activitynet_bad_files(tmp_path, capsys, text, words):
    f = tmp_path / "anet.json"
    if text is None and "UTF-16" in words:
        f.write_bytes(_anet().encode("utf-16"))
    elif text is None:
        f.write_bytes(_anet().encode().replace(b"man", b"m\xffn"))
    else:
        f.write_text(text, encoding="utf-8")
    code, err = _run(capsys, ["build", "corpus", "-o", tmp_path / "out", "--activitynet", f"train={f}",
                              "--no-progress"])
    assert code == EXIT_INVALID and words in err and str(f) in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# ---- moviefib evaluate: (case id, setup(tmp, folder, truth) -> extra argv, words, status) ----
def _sub(tmp, truth, name="a.tsv"):
    return write_submission(tmp / name, truth)


def _json_sub(text):
    def make(tmp, folder, truth):
        p = tmp / "s.json"
        p.write_text(text, encoding="utf-8")
        return [p]
    return make


def _humans(line_fields):
    def make(tmp, folder, truth):
        qid = next(iter(truth))
        base = f'"question_id": "{qid}", "answer": "x", "mode": "text", "annotator": "a", "skipped": false'
        p = tmp / "h.jsonl"
        p.write_text("{" + base + ", " + line_fields + "}\n", encoding="utf-8")
        return [_sub(tmp, truth), "--humans", p]
    return make


def _corrupt_table(tmp, folder, truth):
    t = folder / "data" / "val.parquet"
    t.write_bytes(t.read_bytes()[: len(t.read_bytes()) // 2])
    return [_sub(tmp, truth)]


def _table_dir(tmp, folder, truth):
    t = folder / "data" / "val.parquet"
    t.unlink()
    t.mkdir()
    return [_sub(tmp, truth)]


def _counts(text):
    def make(tmp, folder, truth):
        (folder / "vocab" / "answer_counts.tsv").write_text(text, encoding="utf-8")
        return [_sub(tmp, truth)]
    return make


def _out_file(tmp, folder, truth):
    (tmp / "out").write_text("x")
    return [_sub(tmp, truth), "--out", tmp / "out"]


def _sub_dir(tmp, folder, truth):
    (tmp / "s.tsv").mkdir()
    return [tmp / "s.tsv"]


def _key_dir(tmp, folder, truth):
    (tmp / "k.parquet").mkdir()
    return [_sub(tmp, truth), "--key", tmp / "k.parquet"]


def _order_dir(tmp, folder, truth):
    (tmp / "fib").mkdir()
    p = tmp / "list.txt"
    p.write_text("x\n")
    return [p, "--order-of", tmp / "fib"]


def _bad_answer(answer: str, fmt: str = "tsv"):
    """A submission whose second question gets ``answer`` (the TSV line 3, after the header)."""
    def make(tmp, folder, truth):
        items = list(truth.items())
        items[1] = (items[1][0], answer)
        if fmt == "json":
            p = tmp / "s.json"
            p.write_text(json.dumps(dict(items)), encoding="utf-8")
        else:
            p = tmp / "s.tsv"
            p.write_bytes(("question_id\tanswer\n" + "".join(f"{q}\t{a}\n" for q, a in items)).encode("utf-8"))
        return [p]
    return make


def _looped(role):
    def make(tmp, folder, truth):
        loop = _loop(tmp / "l1", tmp / "l2")
        if role == "submission":
            return [loop]
        return [_sub(tmp, truth), {"humans": "--humans", "key": "--key", "order": "--order-of"}[role], loop]
    return make


EVAL_CASES = [
    ("submission_directory", _sub_dir, "is a directory", EXIT_INVALID),
    ("submission_symlink_loop", _looped("submission"), "l1: symbolic link loop", EXIT_INVALID),
    ("humans_symlink_loop", _looped("humans"), "l1: symbolic link loop", EXIT_INVALID),
    ("key_symlink_loop", _looped("key"), "l1: symbolic link loop", EXIT_INVALID),
    ("order_of_symlink_loop", _looped("order"), "l1: symbolic link loop (--order-of)", EXIT_INVALID),
    ("answer_nul", _bad_answer("a\x00b"), "line 3: 'a\\x00b'", EXIT_INVALID),
    ("answer_escape", _bad_answer("\x1b[31mwalks"), "control_character: 1 x", EXIT_INVALID),
    ("answer_delete", _bad_answer("wa\x7flks"), "control character '\\x7f'", EXIT_INVALID),
    ("json_answer_nul", _bad_answer("a\x00b", "json"), "control_character: 1 x", EXIT_INVALID),
    ("json_answer_c1", _bad_answer("a\x85b", "json"), "control character '\\x85'", EXIT_INVALID),
    ("humans_repeated_key", _humans('"answer": "y"'), "h.jsonl:1: key 'answer' repeated in one JSON object",
     EXIT_INVALID),
    ("submission_missing", lambda tmp, f, t: [tmp / "absent.tsv"], "no such submission file", EXIT_INVALID),
    ("json_5000_digit_answer", _json_sub('{"val-0000": ' + HUGE + "}"), "number an integer of 5000 digits",
     EXIT_INVALID),
    ("json_deep_nesting", _json_sub('{"val-0000": ' + DEEP + "}"), "nested too deeply", EXIT_INVALID),
    ("json_nan_answer", _json_sub('{"val-0000": NaN}'), "JSON number NaN", EXIT_INVALID),
    ("json_top_level_number", _json_sub(HUGE), "top level is a JSON", EXIT_INVALID),
    ("humans_seconds_nan", _humans('"seconds": NaN'), "seconds is NaN", EXIT_INVALID),
    ("humans_seconds_infinity", _humans('"seconds": Infinity'), "seconds is Infinity", EXIT_INVALID),
    ("humans_seconds_overflow", _humans('"seconds": 1e400'), "out of range", EXIT_INVALID),
    ("humans_seconds_string", _humans('"seconds": "2.5"'), "JSON string", EXIT_INVALID),
    ("humans_seconds_true", _humans('"seconds": true'), "JSON boolean", EXIT_INVALID),
    ("humans_seconds_5000_digits", _humans(f'"seconds": {HUGE}'), "5000 digits", EXIT_INVALID),
    ("humans_seconds_400_digits", _humans(f'"seconds": {"9" * 400}'), "too large", EXIT_INVALID),
    ("humans_seconds_negative", _humans('"seconds": -1'), "non-negative", EXIT_INVALID),
    ("humans_deep_nesting", _humans(f'"seconds": 1, "x": {DEEP}'), "nested too deeply", EXIT_INVALID),
    ("humans_directory", lambda tmp, f, t: [_sub(tmp, t), "--humans", tmp], "is a directory", EXIT_INVALID),
    ("corrupt_parquet", _corrupt_table, "val.parquet", EXIT_INVALID),
    ("table_is_directory", _table_dir, "is a directory", EXIT_INVALID),
    ("key_is_directory", _key_dir, "is a directory", EXIT_INVALID),
    ("order_of_directory", _order_dir, "is a directory", EXIT_INVALID),
    ("counts_underscore", _counts("walks\t1_000\n"), "answer_counts.tsv:1", EXIT_INVALID),
    ("counts_negative", _counts("walks\t-3\n"), "answer_counts.tsv:1", EXIT_INVALID),
    ("counts_5000_digits", _counts(f"walks\t{HUGE}\n"), "answer_counts.tsv:1", EXIT_INVALID),
    ("counts_repeated_word", _counts("walks\t3\nwalks\t4\n"), "answer_counts.tsv:2", EXIT_INVALID),
    ("counts_arabic_digits", _counts("walks\t\u0663\n"), "answer_counts.tsv:1", EXIT_INVALID),
    ("out_is_a_file", _out_file, "cannot write", EXIT_INVALID),
    ("split_path", lambda tmp, f, t: [_sub(tmp, t), "--split", "../../x"], "bad split name", EXIT_USAGE),
    ("bootstrap_too_many", lambda tmp, f, t: [_sub(tmp, t), "--bootstrap", "99999999999999999999"],
     "--bootstrap must be between 0 and 100,000", EXIT_USAGE),
    ("seed_negative", lambda tmp, f, t: [_sub(tmp, t), "--bootstrap", "10", "--seed", "-1"],
     "--seed must be >= 0", EXIT_USAGE),
]


@pytest.mark.parametrize("make,words,status", [c[1:] for c in EVAL_CASES], ids=[c[0] for c in EVAL_CASES])
def test_evaluate_bad_inputs(tmp_path, capsys, make, words, status):
    rows = question_rows()
    folder = make_dataset(tmp_path, {"val": rows}, answer_counts={"walks": 9})
    truth = {r["question_id"]: r["answer"] for r in rows}
    extra = make(tmp_path, folder, truth)
    code, err = _run(capsys, ["evaluate", folder, "--bootstrap", "0", *extra, "--no-progress"])
    assert code == status and words in err, err


@pytest.mark.parametrize("fmt", ["tsv", "json"])
def test_evaluate_control_character_answer_is_invalid_when_tolerated(tmp_path, fmt):
    from moviefib.evaluate.key import load_key
    from moviefib.evaluate.submission import read_submission, validate

    rows = question_rows()
    folder = make_dataset(tmp_path, {"val": rows}, answer_counts={"walks": 9})
    truth = {r["question_id"]: r["answer"] for r in rows}
    qid = rows[1]["question_id"]
    sub = _bad_answer(truth[qid] + "\x00", fmt)(tmp_path, folder, truth)[0]
    key = load_key(folder, "val")
    strict = validate(read_submission(sub), key)
    tolerant = validate(read_submission(sub), key, allow_invalid=True)
    assert strict.fatal_kinds == ("control_character",) and strict.counts["control_character"] == 1
    assert tolerant.ok and tolerant.invalid_ids == {qid}  # scored as wrong, not as the right answer


def _utf(encoding: str, bom: bytes = b""):
    def make(truth, tmp):
        p = tmp / "s.tsv"
        body = "question_id\tanswer\n" + "".join(f"{q}\t{a}\n" for q, a in truth.items())
        p.write_bytes(bom + body.encode(encoding))
        return p
    return make


def _utf_json(encoding: str):
    def make(truth, tmp):
        p = tmp / "s.json"
        p.write_bytes(json.dumps(truth).encode(encoding))
        return p
    return make


def _utf_humans(encoding: str):
    def make(truth, tmp):
        qid = next(iter(truth))
        p = tmp / "h.jsonl"
        p.write_bytes((json.dumps({"question_id": qid, "answer": "x", "mode": "text", "annotator": "a",
                                   "skipped": False}) + "\n").encode(encoding))
        return [write_submission(tmp / "a.tsv", truth), "--humans", p]
    return make


ENCODING_CASES = [
    ("tsv_utf16_bom", _utf("utf-16"), "s.tsv: UTF-16 text (byte-order mark); save it as UTF-8"),
    ("tsv_utf16_be_bom", _utf("utf-16-be", b"\xfe\xff"), "s.tsv: UTF-16 text (byte-order mark)"),
    ("tsv_utf32_bom", _utf("utf-32"), "s.tsv: UTF-32 text (byte-order mark)"),
    ("tsv_utf16_no_bom", _utf("utf-16-le"), "s.tsv: NUL bytes all through it"),
    ("json_utf16_bom", _utf_json("utf-16"), "s.json: UTF-16 text (byte-order mark)"),
    ("json_utf32_no_bom", _utf_json("utf-32-le"), "s.json: NUL bytes all through it"),
    ("humans_utf16_bom", _utf_humans("utf-16"), "h.jsonl: UTF-16 text (byte-order mark)"),
    ("humans_utf16_no_bom", _utf_humans("utf-16-le"), "h.jsonl: NUL bytes all through it"),
]


@pytest.mark.parametrize("make,words", [c[1:] for c in ENCODING_CASES], ids=[c[0] for c in ENCODING_CASES])
def test_evaluate_not_utf8_is_one_line(tmp_path, capsys, make, words):
    rows = question_rows()
    folder = make_dataset(tmp_path, {"val": rows}, answer_counts={"walks": 9})
    made = make({r["question_id"]: r["answer"] for r in rows}, tmp_path)
    code, err = _run(capsys, ["evaluate", folder, "--bootstrap", "0", *(made if isinstance(made, list) else [made]),
                              "--no-progress"])
    assert code == EXIT_INVALID and words in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_dataset_symlink_loop(tmp_path, capsys):
    loop = _loop(tmp_path / "ds", tmp_path / "ds2")
    code, err = _run(capsys, ["evaluate", loop, tmp_path / "s.tsv"])
    assert code == EXIT_INVALID and f"{loop}: symbolic link loop" in err, err


def test_evaluate_dataset_that_is_a_file(tmp_path, capsys):
    (tmp_path / "ds").write_text("x")
    code, err = _run(capsys, ["evaluate", tmp_path / "ds", tmp_path / "s.tsv"])
    assert code == EXIT_INVALID and "is a file, not a dataset folder" in err


# ---- load_dataset / read_table / read_answer_counts: (case id, setup(folder) -> (path, split), words) ----
def _ld_corrupt(folder):
    t = folder / "data" / "val.parquet"
    t.write_bytes(b"PAR1" + b"\0" * 50)
    return folder, "val"


def _ld_split_dir(folder):
    (folder / "data" / "val.parquet").unlink()
    (folder / "data" / "val.parquet").mkdir()
    return folder, "val"


def _ld_no_data(folder):
    import shutil

    shutil.rmtree(folder / "data")
    return folder, None


def _ld_file(folder):
    (folder.parent / "f").write_text("x")
    return folder.parent / "f", None


LOAD_CASES = [
    ("corrupt_parquet", _ld_corrupt, "val.parquet: not a readable Parquet file"),
    ("split_is_directory", _ld_split_dir, "is a directory"),
    ("no_data_folder", _ld_no_data, "not a MovieFIB dataset folder"),
    ("folder_is_a_file", _ld_file, "is a file, not a dataset folder"),
    ("missing_folder", lambda folder: (folder.parent / "absent", None), "no such dataset folder"),
    ("folder_symlink_loop", lambda folder: (_loop(folder.parent / "l1", folder.parent / "l2"), None),
     "l1: symbolic link loop"),
    ("unknown_split", lambda folder: (folder, "nope"), "no split 'nope'"),
    ("split_path", lambda folder: (folder, "../../x"), "bad split name"),
]


@pytest.mark.parametrize("how", ["datasets", "in_memory", "read_table"])
@pytest.mark.parametrize("make,words", [c[1:] for c in LOAD_CASES], ids=[c[0] for c in LOAD_CASES])
def test_load_dataset_bad_folders(tmp_path, make, words, how):
    folder = make_dataset(tmp_path, {"val": question_rows()})
    path, split = make(folder)
    with pytest.raises(DatasetError, match=words.replace("(", r"\(")):
        if how == "read_table":
            read_table(path, split or "val")
        else:
            load_dataset(path, splits=None if split is None else [split], in_memory=how == "in_memory",
                         cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("text,line", [("a\t1_000\n", 1), ("a\t1\nb\t+2\n", 2), ("a\t1.5\n", 1),
                                       (f"a\t{HUGE}\n", 1), ("a\t\n", 1)])
def test_read_answer_counts_refuses_non_integers(tmp_path, text, line):
    f = tmp_path / "counts.tsv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=f"counts.tsv:{line}:"):
        read_answer_counts(f)


def test_read_answer_counts_invalid_utf8_names_the_file(tmp_path):
    f = tmp_path / "counts.tsv"
    f.write_bytes(b"walks\t1\nw\xffalks\t2\n")
    with pytest.raises(DatasetError, match="counts.tsv: invalid UTF-8 at byte"):
        read_answer_counts(f)


# ---- a UTF-8 byte-order mark is accepted (and dropped) by every text reader ----
def _bom_readers(tmp):
    from moviefib.evaluate.human import read_human_answers
    from moviefib.questions import read_generic

    bom = b"\xef\xbb\xbf"
    counts = tmp / "counts.tsv"
    counts.write_bytes(bom + b"walks\t3\n")
    humans = tmp / "h.jsonl"
    humans.write_bytes(bom + json.dumps({"question_id": "val-0", "answer": "x", "mode": "text",
                                         "annotator": "a", "seconds": None, "skipped": False}).encode() + b"\n")
    corpus = tmp / "c.jsonl"
    corpus.write_bytes(bom + _JSONL_ROW.encode() + b"\n")
    return {"answer_counts": lambda: list(read_answer_counts(counts)) == ["walks"],
            "human_answers": lambda: [h.question_id for h in read_human_answers(humans)] == ["val-0"],
            "corpus_jsonl": lambda: [r.movie for r in read_generic(corpus).records] == ["v1"]}


@pytest.mark.parametrize("reader", ["answer_counts", "human_answers", "corpus_jsonl"])
def test_utf8_bom_is_dropped(tmp_path, reader):
    assert _bom_readers(tmp_path)[reader]()


def test_build_corpus_splits_differing_only_in_case(tmp_path, capsys):
    # Train.parquet and train.parquet are one file on macOS and Windows: one split would replace the other.
    f = _lines(tmp_path / "c.jsonl", [_jsonl_line('"split": "train"'),
                                      _jsonl_line('"split": "Train"').replace('"v1"', '"v2"')])
    code, err = _run(capsys, ["build", "corpus", "-o", tmp_path / "out", f, "--no-progress"])
    assert code == EXIT_INVALID and "'train' and 'Train' differ only in case" in err, err
    assert not (tmp_path / "out").exists()


# ---- question tables written by another tool: declared types and non-null columns ----
def _retyped(column, values=None, cast=None):
    """Rewrite the val table with ``column`` replaced (by ``values``) or cast (to ``cast``)."""
    def change(folder):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / "data" / "val.parquet"
        table = pq.read_table(path)
        col = table.column(column)
        new = col.cast(cast) if cast is not None else pa.array(values(table.num_rows, col.to_pylist()))
        pq.write_table(table.set_column(table.column_names.index(column), column, new), path)
    return change


TABLE_CASES = [
    ("question_id_integers", _retyped("question_id", lambda n, v: list(range(n))),
     "column 'question_id' holds int64, not string"),
    ("answer_integers", _retyped("answer", lambda n, v: list(range(n))), "column 'answer' holds int64, not string"),
    ("question_null", _retyped("question", lambda n, v: [None] + v[1:]), "column 'question' has 1 null value(s)"),
    ("clip_id_null", _retyped("clip_id", lambda n, v: [None] + v[1:]), "column 'clip_id' has 1 null value(s)"),
    ("question_binary", _retyped("question", cast="binary"), "column 'question' holds binary, not string"),
]


@pytest.mark.parametrize("change,words", [c[1:] for c in TABLE_CASES], ids=[c[0] for c in TABLE_CASES])
def test_question_view_refuses_a_table_off_the_schema(tmp_path, change, words):
    from moviefib.dataset import QuestionView

    folder = make_dataset(tmp_path, {"val": question_rows()})
    change(folder)
    with pytest.raises(DatasetError, match=words.replace("(", r"\(").replace(")", r"\)")):
        QuestionView(read_table(folder, "val"), {"walks": 0})


EVAL_TABLE_CASES = TABLE_CASES + [
    ("sentence_id_null", _retyped("sentence_id", lambda n, v: [None] + v[1:]), "column 'sentence_id' has 1 null"),
    ("movie_integers", _retyped("movie", lambda n, v: list(range(n))), "column 'movie' holds int64"),
]


@pytest.mark.parametrize("change,words", [c[1:] for c in EVAL_TABLE_CASES], ids=[c[0] for c in EVAL_TABLE_CASES])
def test_evaluate_refuses_a_table_off_the_schema(tmp_path, capsys, change, words):
    # Integer answers were a TypeError traceback, integer ids 'invalid submission', null sentence ids
    # a silent one-sentence bootstrap.
    rows = question_rows()
    folder = make_dataset(tmp_path, {"val": rows})
    sub = _sub(tmp_path, {r["question_id"]: r["answer"] for r in rows})
    change(folder)
    code, err = _run(capsys, ["evaluate", folder, sub, "--bootstrap", "0"])
    assert code == EXIT_INVALID and "val.parquet: " in err and words in err, err
    assert len(err.strip().splitlines()) == 1
