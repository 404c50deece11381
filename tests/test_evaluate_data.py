"""Evaluator tests: answer keys from dataset folders (complete and blind splits), plus the helpers
the other test_evaluate_* files use to write small dataset folders in the declared schema."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moviefib.evaluate.errors import InputError, MissingInput
from moviefib.evaluate.key import keys_path, load_key
from moviefib.schema import COLUMN_NAMES, KEY_COLUMNS, arrow_schema

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# (movie, sentence, {word index: Penn tag}) -> one question per blanked word.
SENTENCES = [
    ("1001_ALPHA", "someone walks and then stops", {1: "VBZ", 3: "RB", 4: "VBZ"}),
    ("1001_ALPHA", "she opens the door", {1: "VBZ", 3: "NN"}),
    ("1001_ALPHA", "he looks at her", {1: "VBZ", 3: "PRP"}),
    ("1002_BETA", "the car drives away quickly", {1: "NN", 2: "VBZ", 4: "RB"}),
    ("1002_BETA", "someone smiles", {1: "VBZ"}),
    ("1003_GAMMA", "a tall man enters the room", {1: "JJ", 2: "NN", 3: "VBZ", 5: "NN"}),
]


def question_rows(sentences=SENTENCES, split="val", label=True) -> list[dict]:
    """Rows in the declared schema, one per blanked word; question_type alternates what/how."""
    rows = []
    for s, (movie, sentence, blanks) in enumerate(sentences):
        clip = f"{movie}_00.00.{s:02d}.000-00.00.{s + 1:02d}.000"
        words = sentence.split()
        for wi, tag in blanks.items():
            start = len(" ".join(words[:wi])) + (1 if wi else 0)
            q = words[:wi] + ["_____"] + words[wi + 1:]
            row = dict(question_id=f"{split}-{len(rows):04d}", clip_id=clip, movie=movie,
                       sentence_id=f"{split}-s{s}", start_aligned=float(s), end_aligned=s + 1.0,
                       start_extracted=float(s), end_extracted=s + 1.0, sentence=sentence,
                       question=" ".join(q), answer=words[wi], answer_pos=tag, word_index=wi,
                       char_start=start, char_end=start + len(words[wi]))
            if label:
                row["question_type"] = "what" if tag.startswith("N") else "how"
            rows.append(row)
    return rows


def make_dataset(root: Path, splits: dict[str, list[dict]], *, blind=(), answer_counts=None) -> Path:
    """Write a dataset folder; splits in ``blind`` get null answers and a key in ``<folder>.keys``."""
    folder = root / "ds"
    (folder / "data").mkdir(parents=True)
    for split, rows in splits.items():
        extra = tuple(k for k in rows[0] if k not in COLUMN_NAMES)
        schema = arrow_schema(extra)
        table = pa.Table.from_pylist(rows, schema=schema)
        if split in blind:
            key = table.select(list(KEY_COLUMNS) + list(extra))
            keys_path(folder, split).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(key, keys_path(folder, split))
            nulls = pa.nulls(table.num_rows, pa.string())
            for col in ("answer", "answer_pos", *extra):
                table = table.set_column(table.column_names.index(col), schema.field(col), nulls)
        pq.write_table(table, folder / "data" / f"{split}.parquet")
    if answer_counts is not None:
        (folder / "vocab").mkdir()
        (folder / "vocab" / "answer_counts.tsv").write_text(
            "".join(f"{w}\t{c}\n" for w, c in answer_counts.items()), encoding="utf-8")
    return folder


def test_key_from_complete_split(tmp_path):
    folder = make_dataset(tmp_path, {"val": question_rows()}, answer_counts={"walks": 3})
    key = load_key(folder, "val")
    assert len(key) == 15 and key.answers[0] == "walks"
    assert key.label_columns == ("question_type",)
    assert key.answer_counts == {"walks": 3}
    assert [p.name for p in key.sources] == ["val.parquet", "answer_counts.tsv"]


def test_key_of_blind_split_comes_from_keys_folder(tmp_path):
    rows = question_rows(split="test")
    folder = make_dataset(tmp_path, {"test": rows}, blind={"test"})
    table = pq.read_table(folder / "data" / "test.parquet")
    assert table.column("answer").null_count == len(rows)
    key = load_key(folder, "test")
    assert key.answers == [r["answer"] for r in rows]
    assert key.table.column("question_type").to_pylist() == [r["question_type"] for r in rows]
    assert key.sources[-1] == keys_path(folder, "test")


def test_blind_split_without_key_is_a_usage_error(tmp_path):
    folder = make_dataset(tmp_path, {"test": question_rows(split="test")}, blind={"test"})
    keys_path(folder, "test").unlink()
    with pytest.raises(MissingInput, match="blind.*--key"):
        load_key(folder, "test")


def test_explicit_key_must_match_ids_exactly(tmp_path):
    rows = question_rows(split="test")
    folder = make_dataset(tmp_path, {"test": rows}, blind={"test"})
    key = pq.read_table(keys_path(folder, "test"))
    short = tmp_path / "short.parquet"
    pq.write_table(key.slice(0, 10), short)
    with pytest.raises(InputError, match="5 question\\(s\\) of the split are not in the key"):
        load_key(folder, "test", key_file=short)
    other = tmp_path / "other.parquet"
    pq.write_table(key.set_column(0, "question_id", pa.array([f"x{i}" for i in range(len(rows))])), other)
    with pytest.raises(InputError, match="15 key id\\(s\\) are not questions of the split"):
        load_key(folder, "test", key_file=other)


def test_missing_split_folder_and_columns(tmp_path):
    folder = make_dataset(tmp_path, {"val": question_rows()})
    with pytest.raises(MissingInput, match="no split 'test' \\(have: val\\)"):
        load_key(folder, "test")
    with pytest.raises(MissingInput, match="no such dataset folder"):
        load_key(tmp_path / "nope", "val")
    pq.write_table(pa.table({"question_id": ["a"]}), folder / "data" / "bad.parquet")
    with pytest.raises(InputError, match="missing column"):
        load_key(folder, "bad")
    (folder / "data" / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="junk.parquet: not a readable Parquet file") as info:
        load_key(folder, "junk")
    assert "\n" not in str(info.value)
    (tmp_path / "plain").mkdir()
    with pytest.raises(MissingInput, match="not a MovieFIB dataset folder"):
        load_key(tmp_path / "plain", "val")


def test_key_files_are_read_by_the_dataset_reader(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path, {"test": question_rows(split="test")}, blind={"test"})
    with pytest.raises(MissingInput, match="absent.parquet: no answer key for split 'test'"):
        load_key(folder, "test", key_file=tmp_path / "absent.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="junk.parquet: not a readable Parquet file"):
        load_key(folder, "test", key_file=tmp_path / "junk.parquet")
    monkeypatch.chdir(folder)  # "." names the folder: its keys are beside it, in <name>.keys/
    assert load_key(".", "test").sources[-1] == keys_path(folder, "test")


def test_partly_answered_split_is_rejected(tmp_path):
    rows = question_rows()
    rows[3]["answer"] = None
    folder = make_dataset(tmp_path, {"val": rows})
    with pytest.raises(InputError, match="1 of 15 questions have no answer"):
        load_key(folder, "val")


def _linked(tmp_path: Path) -> tuple[Path, Path]:
    folder = make_dataset(tmp_path / "real", {"test": question_rows(split="test")}, blind={"test"})
    link = tmp_path / "current"
    link.symlink_to(folder, target_is_directory=True)
    return folder, link


@pytest.mark.parametrize("spelling", ["{link}", "{link}/", "{link}//", "{link}/data/.."])
def test_a_folder_named_by_a_link_finds_the_keys_the_builder_wrote_beside_the_real_one(tmp_path, spelling):
    folder, link = _linked(tmp_path)
    key = load_key(spelling.format(link=link), "test")  # the link's name had no <name>.keys: "is blind"
    assert key.sources[-1].resolve() == keys_path(folder, "test").resolve()


def test_a_link_with_keys_of_its_own_uses_them(tmp_path):
    folder, link = _linked(tmp_path)
    (tmp_path / "current.keys").mkdir()
    own = tmp_path / "current.keys" / "test.parquet"
    own.write_bytes(keys_path(folder, "test").read_bytes())
    assert load_key(link, "test").sources[-1] == own


def test_the_same_folder_by_its_link_and_as_dot_inside_it_has_the_same_keys(tmp_path, monkeypatch):
    folder, link = _linked(tmp_path)
    by_link = load_key(link, "test").sources[-1].resolve()
    monkeypatch.chdir(link)
    assert load_key(".", "test").sources[-1].resolve() == by_link


@pytest.mark.parametrize("hidden", ["._val.parquet", ".parquet"])
def test_a_hidden_file_in_data_is_no_split(tmp_path, hidden):
    # macOS writes ._<name> beside files copied to other file systems: not Parquet, and no split.
    from moviefib.dataset import available_splits, load_dataset

    folder = make_dataset(tmp_path, {"val": question_rows(), "test": question_rows(split="test")})
    (folder / "data" / hidden).write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert available_splits(folder) == ["val", "test"]
    pytest.importorskip("datasets")
    assert list(load_dataset(folder, in_memory=True)) == ["val", "test"]
