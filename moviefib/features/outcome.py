"""What an extraction run reports: failed clips, the failure manifest ``<out>.failures.jsonl``, the
summary lines of the log and :class:`ExtractSummary` (see :mod:`moviefib.features.pipeline`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_write

# One logger for the whole of extraction, the one it had before it was split into modules: a user's
# logging settings for it keep working.
LOGGER = "moviefib.features.pipeline"
log = logging.getLogger(LOGGER)

# Clips named in a summary line ("first: a, b, c"): a partial tree of 100k absent clips is one line.
_FIRST_NAMES = 3


@dataclass(frozen=True)
class Failure:
    """A clip that could not be processed (or a warning about one): its id, video path and the reason.

    ``decoded``/``expected``: its decoded and expected durations in seconds, when its length was the
    problem (``expected_from``: ``clip id``, ``segment`` or ``header``).
    """

    clip_id: str
    path: str
    reason: str
    decoded: float | None = None
    expected: float | None = None
    expected_from: str | None = None

    def to_json(self) -> dict:
        """The manifest record: id, path and reason, with the durations when they were the problem."""
        d = {"clip_id": self.clip_id, "path": self.path, "reason": self.reason}
        if self.decoded is not None:
            d.update(decoded=round(self.decoded, 3), expected=self.expected, expected_from=self.expected_from)
        return d


@dataclass(frozen=True)
class ExtractSummary:
    """The outcome of :func:`~moviefib.features.pipeline.extract`.

    Attributes:
        output: the store written (None when no clip at all has features).
        total: clips to process in this shard.
        extracted: clips extracted by this run.
        reused: clips found finished by an earlier run (staged files or an existing store).
        failures: clips that failed in this run, with reasons (also in ``failures_path``).
        failures_path: the failure manifest, or None when no failure record holds.
        steps: feature rows computed by this run.
        seconds: wall time of this run.
        redone: finished clips extracted again because their video file changed (counted in
            ``extracted``, not in ``reused``).
        partial: clips of this run kept although clearly short (``allow_partial``), marked in the store.
        warnings: clips of this run kept with a warning about their length (somewhat short, or a
            header that disagrees with a whole file).
        failures_kept: earlier failure records this run did not retry, kept in the manifest.
    """

    output: str | None
    total: int
    extracted: int
    reused: int
    failures: tuple[Failure, ...]
    failures_path: str | None
    steps: int
    seconds: float
    redone: int = 0
    partial: int = 0
    warnings: tuple[Failure, ...] = ()
    failures_kept: int = 0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def clips_per_s(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0


def first_names(names: Sequence[str]) -> str:
    """The first few names of a list, for one summary line."""
    more = len(names) - _FIRST_NAMES
    return ", ".join(names[:_FIRST_NAMES]) + (f" and {more} more" if more > 0 else "")


def failure_kind(f: Failure) -> str:
    """A short name for what went wrong (``no such file``, ``clip cut short``...), to group failures."""
    reason = f.reason.removeprefix(f"{f.path}: ")
    if f.decoded is not None:
        return "cut short" if "cut short" in reason else "short"
    return reason.split(" (")[0].split(":")[0].split(";")[0].strip()[:60]


def failures_path(out: Path) -> Path:
    """The failure manifest of the store ``out``."""
    return out.with_name(out.name + ".failures.jsonl")


def kept_failures(path: Path, *, tried: set[str], finished: set[str]) -> list[Failure]:
    """The failure records of earlier runs that still hold: their clip was not tried by this run
    (``--limit``, fewer clips) and is not finished since."""
    if not path.is_file():
        return []
    kept = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            d = json.loads(line)
            f = Failure(str(d["clip_id"]), str(d["path"]), str(d["reason"]), d.get("decoded"),
                        d.get("expected"), d.get("expected_from"))
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d: not a failure record; dropped", path, n)  # written atomically: outside damage
            continue
        if f.clip_id not in tried and f.clip_id not in finished:
            kept.append(f)
    return kept


def write_failures(path: Path, records: Sequence[Failure]) -> Path | None:
    """Write the manifest (None and no file when there is no record: an earlier run's manifest whose
    failed clips now succeeded is removed)."""
    if records:
        atomic_write(path, "".join(json.dumps(f.to_json()) + "\n" for f in records), fsync=True)
        return path
    if path.exists():
        path.unlink()
    return None


def log_outcome(out: Path, total: int, failures: list[Failure], warnings: list[Failure], partial: int,
                manifest: Path | None, kept: int) -> None:
    """One line each for the failures, the length warnings and the partial clips of a run."""
    if failures:
        kinds: dict[str, list[str]] = {}
        for f in failures:
            kinds.setdefault(failure_kind(f), []).append(f.clip_id)
        groups = "; ".join(f"{len(ids)} {kind} (first: {first_names(ids)})"
                           for kind, ids in sorted(kinds.items(), key=lambda kv: -len(kv[1])))
        log.warning("%s: %d of %d clips failed: %s; details in %s", out, len(failures), total, groups, manifest)
    if kept:
        log.info("%s: %d failure records of earlier runs, not retried by this one, are kept in %s",
                 out, kept, manifest)
    if warnings:
        log.warning("%s: %d clips kept with a warning about their length (first: %s)", out, len(warnings),
                    "; ".join(f"{w.clip_id}: {w.reason}" for w in warnings[:_FIRST_NAMES]))
    if partial:
        log.warning("%s: %d clips kept although clearly short, marked partial in the store", out, partial)
