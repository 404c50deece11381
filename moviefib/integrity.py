"""Is a decoded clip as long as it should be? One rule for extraction and the human page.

A clip's length is known three ways: its LSMDC clip id and extracted start/end (``expected``), its
container's header (``header``: may lie, some AVI headers say 444 frames and hold 68), and what decoding
actually yields (``decoded``: the time from the first frame to the end of the last one). A file cut short
decodes its first part without any error, so the decoded length is compared with the expected one.

Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "short"]


@dataclass(frozen=True)
class DurationTolerance:
    """How much shorter than expected a decoded clip may be.

    Attributes:
        short: decoded / expected below this is a clip clearly short: refused (or kept as partial).
        warn: decoded / expected below this (and at or above ``short``) is kept with a counted warning.
        slack: seconds always forgiven (rounding of the times in ids, one frame period at the end).
    """

    short: float = 0.5
    warn: float = 0.9
    slack: float = 0.25

    def __post_init__(self):
        if not (0.0 < self.short <= self.warn <= 1.0):
            raise ValueError(f"duration tolerance needs 0 < short <= warn <= 1, not short={self.short} "
                             f"warn={self.warn}")
        if self.slack < 0:
            raise ValueError(f"duration slack must be >= 0 seconds, not {self.slack}")


@dataclass(frozen=True)
class DurationCheck:
    """The verdict on one clip's length.

    Attributes:
        decoded: seconds actually decoded.
        expected: seconds the clip should last (None: nothing to compare with).
        source: where ``expected`` comes from (``clip id``, ``header``), or None.
        status: ``ok``, ``warn`` (somewhat short) or ``short`` (clearly short).
    """

    decoded: float
    expected: float | None
    source: str | None
    status: Status

    @property
    def reason(self) -> str:
        """Both durations in words, for a failure manifest or a warning."""
        if self.expected is None:
            return f"decoded {self.decoded:.2f} s (no expected length to compare with)"
        pct = 100.0 * self.decoded / self.expected if self.expected > 0 else 100.0
        what = {"ok": "as expected", "warn": "somewhat short", "short": "clip cut short"}[self.status]
        return (f"{what}: decoded {self.decoded:.2f} s of the {self.expected:.2f} s its {self.source} "
                f"gives ({pct:.0f} %)")


def judge_duration(decoded: float, *, expected: float | None, source: str | None,
                   tolerance: DurationTolerance = DurationTolerance()) -> DurationCheck:
    """Compare a decoded length with the expected one under ``tolerance``."""
    if expected is None or expected <= 0:
        return DurationCheck(decoded, None, None, "ok")
    ratio = (decoded + tolerance.slack) / expected
    status: Status = "short" if ratio < tolerance.short else "warn" if ratio < tolerance.warn else "ok"
    return DurationCheck(decoded, expected, source, status)
