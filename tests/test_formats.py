"""LSMDC 6/8-column readers and writers: real files round trip, every bad-row and quirk case."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from moviefib.formats import (
    ClipId,
    DescriptionRow,
    FIBRow,
    FormatError,
    format_timestamp,
    id_problem,
    lsmdc_clip_problem,
    movie_of,
    parse_timestamp,
    read_descriptions,
    read_fib,
    text_problem,
    write_rows,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VAL = SHARED / "data" / "moviefib_val"

CLIP = "3009_BATTLE_LOS_ANGELES_00.03.07.170-00.03.09.675"
TIMES = "00.03.07.170\t00.03.09.675\t00.03.07.170\t00.03.09.675"


def _write(tmp_path: Path, lines: list[str] | bytes, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
    return path


def _fib(sentence: str, fill_in: str, blank: str) -> str:
    return f"{CLIP}\t{TIMES}\t{sentence}\t{fill_in}\t{blank}"


@pytest.mark.parametrize("name,reader", [
    ("LSMDC16_annos_val.csv", read_descriptions), ("LSMDC16_annos_val_FIB.csv", read_fib)])
def test_real_files_round_trip_byte_identical(tmp_path, name, reader):
    src = VAL / name
    if not src.exists():
        pytest.skip(f"{src} absent (../shared not available)")
    result = reader(src)
    assert len(result) == sum(1 for _ in open(src, "rb"))
    assert not result.problems
    out = tmp_path / name
    write_rows(out, result.rows)
    assert filecmp.cmp(out, src, shallow=False)


def test_real_fib_records_are_typed():
    src = VAL / "LSMDC16_annos_val_FIB.csv"
    if not src.exists():
        pytest.skip(f"{src} absent (../shared not available)")
    rows = read_fib(src).rows
    first = rows[0]
    assert isinstance(first, FIBRow)
    assert first.clip.movie == "3009_BATTLE_LOS_ANGELES"
    assert first.start_aligned == pytest.approx(187.170)
    assert "_____" in first.fill_in and first.blank


def test_clip_id_parsing_and_video_path():
    clip = ClipId.parse(CLIP)
    assert (clip.movie, clip.movie_id, clip.movie_name) == ("3009_BATTLE_LOS_ANGELES", "3009", "BATTLE_LOS_ANGELES")
    assert clip.start == pytest.approx(187.17) and clip.end == pytest.approx(189.675)
    assert clip.source == "M-VAD"
    assert clip.video_path("/videos") == Path(f"/videos/3009_BATTLE_LOS_ANGELES/{CLIP}.avi")
    assert movie_of(CLIP) == "3009_BATTLE_LOS_ANGELES"
    with pytest.raises(ValueError, match="malformed clip id"):
        ClipId.parse("not_a_clip")


@pytest.mark.parametrize("text,seconds", [
    ("00.00.00.000", 0.0), ("01.02.27.034", 3747.034), ("00.03.07.170", 187.17)])
def test_timestamps(text, seconds):
    assert parse_timestamp(text) == pytest.approx(seconds)
    assert format_timestamp(seconds) == text


@pytest.mark.parametrize("bad", ["1:02:27.034", "00.61.00.000", "00.00.00", "", "aa.bb.cc.ddd"])
def test_malformed_timestamps(bad):
    with pytest.raises(ValueError):
        parse_timestamp(bad)


BAD_ROWS = [
    (f"{CLIP}\t{TIMES}", 6, "expected 6 tab-separated columns, found 5"),
    (f"{CLIP}\t00.03.07\t00.03.09.675\t00.03.07.170\t00.03.09.675\tsomeone walks", 6, "START_ALIGNED"),
    (f"{CLIP}\t00.03.10.000\t00.03.09.675\t00.03.07.170\t00.03.09.675\tsomeone walks", 6, "is after"),
    (f"{CLIP}\t{TIMES}\t   ", 6, "empty SENTENCE"),
    (_fib("someone walks", "_____ _____", "walks"), 8, "not more"),
    (_fib("someone walks", "someone ______", "walks"), 8, "not more"),
    (_fib("someone walks", "someone runs _____", "walks"), 8, "does not reproduce"),
    (_fib("someone walks", "someone _____", ""), 8, "empty BLANK"),
]


@pytest.mark.parametrize("line,ncols,reason", BAD_ROWS)
def test_bad_rows_strict_name_file_line_reason(tmp_path, line, ncols, reason):
    reader = read_descriptions if ncols == 6 else read_fib
    good = f"{CLIP}\t{TIMES}\tsomeone walks" if ncols == 6 else _fib("someone walks", "someone _____", "walks")
    path = _write(tmp_path, [good, line])
    with pytest.raises(FormatError) as err:
        reader(path)
    assert err.value.line == 2 and err.value.path == str(path)
    assert reason in str(err.value) and f"{path}:2:" in str(err.value)


@pytest.mark.parametrize("line,ncols,reason", BAD_ROWS)
def test_bad_rows_skip_mode_reports_each(tmp_path, line, ncols, reason):
    reader = read_descriptions if ncols == 6 else read_fib
    good = f"{CLIP}\t{TIMES}\tsomeone walks" if ncols == 6 else _fib("someone walks", "someone _____", "walks")
    path = _write(tmp_path, [good, line, good])
    result = reader(path, errors="skip")
    assert len(result.rows) == 2 and [r.line for r in result.rows] == [1, 3]
    assert len(result.problems) == 1
    assert result.problems[0].line == 2 and reason in result.problems[0].reason


def test_invalid_utf8_is_reported_with_line(tmp_path):
    path = _write(tmp_path, f"{CLIP}\t{TIMES}\tok\n{CLIP}\t{TIMES}\tbad \xff byte\n".encode("latin-1"))
    with pytest.raises(FormatError, match=r":2: invalid UTF-8"):
        read_descriptions(path)
    assert len(read_descriptions(path, errors="skip").problems) == 1


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(FormatError, match="empty file"):
        read_descriptions(_write(tmp_path, b""))
    with pytest.raises(FormatError, match="no such file"):
        read_fib(tmp_path / "absent.csv")


def test_bom_and_crlf_accepted(tmp_path):
    text = f"{CLIP}\t{TIMES}\tsomeone walks\r\n{CLIP}\t{TIMES}\tthen stops\r\n"
    path = _write(tmp_path, b"\xef\xbb\xbf" + text.encode())
    rows = read_descriptions(path).rows
    assert [r.clip_id for r in rows] == [CLIP, CLIP]
    assert [r.sentence for r in rows] == ["someone walks", "then stops"]


def test_quoted_sentences_are_not_unquoted(tmp_path):
    sentence = 'he reads "the end" aloud'
    rows = read_descriptions(_write(tmp_path, [f"{CLIP}\t{TIMES}\t{sentence}"])).rows
    assert rows[0].sentence == sentence


def test_release_quirks_are_kept_as_warnings(tmp_path):
    lines = [
        _fib("someone hovers over it", "someone h_____s over it", "over"),       # blank inside a word
        _fib("he looks at him and looks away", "he _____ at him and", "looks"),  # repeated word truncated
        _fib("someone walks", "someone _____", "walks"),
    ]
    lines.append(_fib("someone walks", "someone walks", "walks"))                # no blank at all
    result = read_fib(_write(tmp_path, lines))
    assert len(result.rows) == 4  # nothing dropped
    assert result.warning_counts() == {"blank_inside_word": 1, "truncated_fill_in": 1, "no_blank": 1}
    assert [w.line for w in result.warnings] == [1, 2, 4]
    out = tmp_path / "out.csv"
    write_rows(out, result.rows)
    assert out.read_bytes() == (tmp_path / "f.csv").read_bytes()


def test_writer_formats_times_and_refuses_tabs(tmp_path):
    row = DescriptionRow(CLIP, 187.17, 189.675, 187.17, 189.675, "someone walks")
    out = tmp_path / "d.csv"
    write_rows(out, [row])
    assert out.read_text() == f"{CLIP}\t{TIMES}\tsomeone walks\n"
    assert read_descriptions(out).rows == [row]
    with pytest.raises(ValueError, match="tab"):
        write_rows(tmp_path / "e.csv", [DescriptionRow(CLIP, 1, 2, 1, 2, "a\tb")])
    assert not (tmp_path / "e.csv").exists()
    assert not list(tmp_path.glob(".*tmp"))  # no half-written leftovers


def test_real_clip_ids_and_rows_pass_the_id_rule():
    """0 false refusals: all 7,408 val clip ids parse, and every row of the real files has an id whose
    times agree with its ALIGNED columns (the id rule of formats.lsmdc_clip_problem)."""
    ids_file = VAL / "lsmdc16_val_clip_ids.tsv"
    if not ids_file.exists():
        pytest.skip(f"{ids_file} absent (../shared not available)")
    ids = [line.split("\t", 1)[0] for line in ids_file.read_text(encoding="utf-8").splitlines()]
    assert len(ids) == 7408
    assert [i for i in ids if id_problem(i)] == []
    parsed = [ClipId.parse(i) for i in ids]
    assert all(c.start < c.end for c in parsed)
    rows = read_descriptions(VAL / "LSMDC16_annos_val.csv").rows + read_fib(VAL / "LSMDC16_annos_val_FIB.csv").rows
    assert len(rows) == 5946 + 17568
    assert [r.line for r in rows if lsmdc_clip_problem(r.clip_id, r.start_aligned, r.end_aligned)] == []
    # The EXTRACTED times differ from the id on short clips (padded to 2 s): they are not the id's times.
    assert any(abs(r.start_extracted - r.clip.start) > 0.1 for r in rows)


@pytest.mark.parametrize("clip_id,start,end,reason", [
    (CLIP, 187.170, 189.675, None),
    (CLIP, 187.171, 189.674, None),                       # a millisecond of rounding
    (CLIP, 187.170, 191.000, "disagree"),
    ("3009_BATTLE_00.03.07.170-00.03.09", 187.17, 189.0, "time stamp"),
    ("BATTLE_00.03.07.170-00.03.09.675", 187.17, 189.675, "malformed clip id"),
    ("3009__00.03.07.170-00.03.09.675x", 187.17, 189.675, "malformed clip id"),
    ("3009_A/B_00.03.07.170-00.03.09.675", 187.17, 189.675, "path separator"),
    ("3009_A\tB_00.03.07.170-00.03.09.675", 187.17, 189.675, "control character"),
])
def test_lsmdc_clip_rule(clip_id, start, end, reason):
    problem = lsmdc_clip_problem(clip_id, start, end)
    assert problem is None if reason is None else reason in problem


@pytest.mark.parametrize("text,ok", [("a\tb", True), ("don't \"quote\" – é", True), ("a\x00b", False),
                                     ("a\nb", False), ("a\x1bb", False), ("a\x85b", False)])
def test_text_rule_allows_tab_only(text, ok):
    assert (text_problem(text) is None) == ok
    assert text_problem("line\nbreak", line_breaks=True) is None
