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
]


@pytest.mark.parametrize("line,words", [c[1:] for c in JSONL_LINE_CASES], ids=[c[0] for c in JSONL_LINE_CASES])
def test_build_corpus_jsonl_bad_lines_strict_and_skip(tmp_path, capsys, line, words):
    good = _jsonl_line('"video": "v0"')
    f = _lines(tmp_path / "c.jsonl", [good, line])
    code, err = _run(capsys, ["build", "corpus", "-o", tmp_path / "out", f, "--no-progress"])
    assert code == EXIT_INVALID and words in err and f"{f}:2:" in err, err
    from moviefib.build import read_generic

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
    ("segment_not_pair", _anet(ts="[[1]]"), "start is null"),
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
    if text is None:
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


EVAL_CASES = [
    ("submission_directory", _sub_dir, "is a directory", EXIT_INVALID),
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
