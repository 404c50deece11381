"""``--protocol frozenbilm``: the rows FrozenBiLM's code scores, checked against pandas itself (its first
row as the header, default quoting, missing values), on synthetic files with every quirk and on the
real val file (../shared)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from moviefib.cli import main
from moviefib.evaluate import write_submission
from moviefib.evaluate.api import evaluate
from moviefib.evaluate.errors import InputError, UsageError
from moviefib.evaluate.key import load_key
from moviefib.evaluate.protocol import PANDAS_1_4_NA, FileRow, read_like_frozenbilm, top_answers
from moviefib.formats import format_timestamp
from moviefib.questions import import_dataset, read_fib_import


def _line(i: int, sentence: str, fill_in: str, blank: str, movie: str = "0001_ALPHA_MOVIE") -> str:
    start, end = format_timestamp(10.0 * i), format_timestamp(10.0 * i + 2)
    return "\t".join([f"{movie}_{start}-{end}", start, end, start, end, sentence, fill_in, blank])


# Val lines: 1 the header; 3 has no blank; 4 opens a quote closed in its FILL_IN (the row gets 7 fields:
# question "says", no answer); 5's answer opens a quote closed at the end of 6 (6 is swallowed); 7's
# answer is pandas' NA; 8's answer "None" is NA only since pandas 2.0 (FrozenBiLM pins 1.4.1).
VAL_LINES = [
    _line(1, "someone walks", "someone _____", "walks"),
    _line(2, "someone opens the door", "someone opens the _____", "door"),
    _line(3, "someone sits", "someone sits", "sits"),
    _line(4, '"Stop he says', '"Stop he _____', "says"),
    _line(5, 'someone says "Hi', "someone says _____", '"Hi'),
    _line(6, "someone waves", "someone waves", 'Bye"'),  # no blank: the importer keeps it as it is
    _line(7, "someone reads NA", "someone reads _____", "NA"),
    _line(8, "someone reads None", "someone reads _____", "None"),
]
# Training lines: 1 (the header) has the answer "door", so "door" is no training answer.
TRAIN_LINES = [
    _line(1, "someone opens the door", "someone opens the _____", "door", "0002_BETA_MOVIE"),
    _line(2, "someone reads None", "someone reads _____", "None", "0002_BETA_MOVIE"),
    _line(3, "someone walks", "someone _____", "walks", "0002_BETA_MOVIE"),
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _pandas_as_frozenbilm(path: Path):
    """FrozenBiLM's own call, with pandas 1.4.1's missing values (this pandas adds "None")."""
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=sorted(PANDAS_1_4_NA))


def _same_as_pandas(rows: tuple[FileRow, ...], path: Path) -> None:
    frame = _pandas_as_frozenbilm(path)
    assert len(rows) == len(frame)
    for r, q, a in zip(rows, frame.iloc[:, 6].tolist(), frame.iloc[:, 7].tolist()):
        assert r.question == (None if pd.isna(q) else q)
        assert r.answer == (None if pd.isna(a) else a)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fib")
    return _write(d / "LSMDC16_annos_val_FIB.csv", VAL_LINES), _write(d / "LSMDC16_annos_training_FIB.csv",
                                                                        TRAIN_LINES)


@pytest.fixture(scope="module")
def imported(files, spacy_tagger, tmp_path_factory):
    """The two files through the real importer (ids <split>-<row>, stats kind "imported")."""
    val, train = files
    rows = read_fib_import(val).records + read_fib_import(train).records
    folder = tmp_path_factory.mktemp("imp") / "ds"
    import_dataset(rows, folder, tagger=spacy_tagger, sources=[str(val), str(train)])
    return folder


def test_reading_matches_pandas_on_every_quirk(files):
    val, _ = files
    rows = read_like_frozenbilm(val.read_bytes(), where=str(val))
    _same_as_pandas(rows, val)
    assert [r.line for r in rows] == [2, 3, 4, 5, 7, 8]  # 1 is the header, 6 swallowed by 5
    assert rows[2] == FileRow(4, "says", None)
    assert rows[3].answer.startswith("Hi\n") and rows[3].answer.endswith("Bye")
    assert rows[4].answer is None and rows[5].answer == "None"


def test_blank_lines_and_crlf_as_pandas(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join([VAL_LINES[0], "", "   ", VAL_LINES[1], VAL_LINES[4],
                                                    VAL_LINES[5], VAL_LINES[2]]).encode() + b"\r\n")
    rows = read_like_frozenbilm(path.read_bytes(), where=str(path))
    _same_as_pandas(rows, path)
    assert [r.line for r in rows] == [4, 5, 7]


@pytest.mark.parametrize(("lines", "message"), [
    (["a\tb", "c\td"], "pandas reads 2 columns"),
    ([VAL_LINES[0], VAL_LINES[1] + "\textra", VAL_LINES[2]], "first column as the index"),
    ([VAL_LINES[0], VAL_LINES[1], VAL_LINES[2] + "\textra"], "pandas cannot read it"),
    ([VAL_LINES[0], VAL_LINES[4]], "pandas cannot read it"),  # a quote never closed
])
def test_files_frozenbilm_cannot_read_are_refused(tmp_path, lines, message):
    path = _write(tmp_path / "f.csv", lines)
    with pytest.raises(InputError, match=message) as err:
        read_like_frozenbilm(path.read_bytes(), where=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_top_answers_ties_by_first_appearance():
    rows = [FileRow(i, "_____", a) for i, a in enumerate(["b", "a", None, "a", "b", "c", None])]
    assert top_answers(rows, 2) == {"b", "a"}  # b, a and NA tie at 2: b and a come first
    assert top_answers(rows, 3) == {"b", "a"}  # NA takes the third place and matches nothing


def _truth(tmp_path, folder, split="val"):
    key = load_key(folder, split)
    return write_submission(tmp_path / f"{split}.tsv", dict(zip(key.question_ids, key.answers)))


def test_imported_dataset_scores_frozenbilm_rows(imported, files, tmp_path):
    ev = evaluate(imported, _truth(tmp_path, imported), protocol="frozenbilm", bootstrap=0)
    p, s = ev.protocol, ev.submissions[0]
    assert s.summary.accuracy == 1.0 and s.summary.n == 8  # the official score: every row
    # Scored: lines 2, 5, 7, 8. Right: 8 ("None"); 2's "door" is no training answer (the training
    # file's "door" is its header); 5's gold is the merged text; 7's gold is NA.
    assert (s.protocol.n, s.protocol.correct, s.protocol.unanswerable_matches) == (4, 1, 1)
    steps = {st.name: st for st in p.steps}
    assert [steps[n].rows for n in ("header", "quoting", "no_blank")] == [1, 4, 2]
    assert all(st.applied for st in p.steps) and p.comparable and p.n_rows == 4
    with_files = evaluate(imported, _truth(tmp_path, imported), protocol="frozenbilm", bootstrap=0,
                          fib_file=files[0], train_fib_file=files[1])
    assert with_files.submissions[0].protocol == s.protocol
    assert (with_files.protocol.scored == p.scored).all() and with_files.protocol.gold == p.gold


def test_training_split_drops_rows_outside_the_vocabulary(imported, tmp_path):
    ev = evaluate(imported, _truth(tmp_path, imported, "train"), split="train", protocol="frozenbilm",
                  bootstrap=0)
    # Line 1 is the header; "None" and "walks" are the training answers: both rows kept, both right.
    assert (ev.submissions[0].protocol.n, ev.submissions[0].protocol.correct) == (2, 2)


def test_cli_reports_both_scores(imported, tmp_path, capsys):
    out_dir = tmp_path / "out"
    code = main(["evaluate", str(imported), str(_truth(tmp_path, imported)), "--protocol", "frozenbilm",
                 "--bootstrap", "0", "--no-chart", "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"accuracy \(exact\) +100\.00%", out)
    assert re.search(r"accuracy \(exact\), frozenbilm protocol +25\.00%", out)
    assert re.search(r"questions scored \(of 8\) +4\n", out)
    metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["submissions"][0]["accuracy"] == 1.0
    assert metrics["submissions"][0]["protocol"]["frozenbilm"] == {
        "n": 4, "correct": 1, "accuracy": 0.25, "unanswerable_matches": 1}
    assert metrics["protocol"]["comparable"] is True and metrics["settings"]["protocol"] == "frozenbilm"
    report = (out_dir / "report.md").read_text(encoding="utf-8")
    assert "## frozenbilm protocol" in report and "| accuracy (exact), frozenbilm protocol | 25.00% |" in report


def test_official_output_is_unchanged_without_the_protocol(imported, tmp_path):
    ev = evaluate(imported, _truth(tmp_path, imported), bootstrap=0)
    assert ev.protocol is None and "protocol" not in ev.to_dict() and "protocol" not in ev.settings
    assert "protocol" not in ev.to_dict()["submissions"][0]


def test_a_file_that_is_not_the_datasets_is_refused(imported, tmp_path, capsys):
    other = list(VAL_LINES)
    other[1] = _line(2, "someone opens the window", "someone opens the _____", "window")
    path = _write(tmp_path / "other.csv", other)
    code = main(["evaluate", str(imported), str(_truth(tmp_path, imported)), "--protocol", "frozenbilm",
                 "--fib", str(path)])
    err = capsys.readouterr().err
    assert code == 3 and f"{path} line 2:" in err and "not the file it was imported from" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fib_options_need_the_protocol(imported, tmp_path, files):
    with pytest.raises(UsageError, match="--protocol frozenbilm only"):
        evaluate(imported, _truth(tmp_path, imported), fib_file=files[0], bootstrap=0)


def test_built_dataset_says_what_it_cannot_apply(tiny_dataset, tmp_path):
    ev = evaluate(tiny_dataset, _truth(tmp_path, tiny_dataset), protocol="frozenbilm", bootstrap=0)
    steps = {st.name: st for st in ev.protocol.steps}
    assert not steps["header"].applied and "not imported" in steps["header"].note
    assert not steps["quoting"].applied and steps["no_blank"].applied
    assert steps["top_answers"].applied and "no header row" in steps["top_answers"].note
    assert not ev.protocol.comparable
    assert ev.submissions[0].protocol.n == ev.n_questions  # every built question holds a blank


def test_real_val_file_read_as_pandas_reads_it(shared_dir, tmp_path):
    fib = shared_dir / "data" / "moviefib_val" / "LSMDC16_annos_val_FIB.csv"
    if not fib.is_file():
        pytest.skip(f"{fib} absent (the real val file lives in ../shared)")
    rows = read_like_frozenbilm(fib.read_bytes(), where=str(fib))
    _same_as_pandas(rows, fib)
    n_lines = fib.read_bytes().count(b"\n")
    assert [r.line for r in rows] == list(range(2, n_lines + 1))  # only the header row is dropped
    assert len(rows) == 17567 and sum("_____" not in r.question for r in rows) == 0
