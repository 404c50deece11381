#!/usr/bin/env python
"""Measure what a clip cut short, or a header that lies, looks like: the figures behind the tolerance.

A clip's length is known three ways: its LSMDC clip id (extracted start/end), its container's header,
and what decoding yields. This script builds a set of intact and damaged files and, for each, measures

* the header's duration and frame count (``moviefib.video.probe``),
* the decoded duration (first frame to the end of the last one, frame period 1/fps) and whether
  decoding raised (``moviefib.video.iter_frames``),
* the demuxer's packet-scan duration (packets only, no decoding),
* structural signals that tell a cut file from a lying header: for AVI the RIFF size against the
  file size and the idx1 index (at the very end of the file); for MP4 whether each top-level box
  (moov, mdat) fits in the file; for MPEG-PS the program end code,
* the verdict of ``moviefib.integrity.judge_duration`` against the expected length: the clip id's
  extracted span for demo (LSMDC-like) clips, else the header's duration.

Inputs (built in a temporary folder, or ``--work DIR``):

* ``../shared/videos`` when present (else synthetic stand-ins: MPEG-4 .avi, h264 .mp4, MPEG-2 .mpg
  with a start offset), their AVI copies (MPEG-4 part 2 in .avi, like LSMDC clips, same frames), and
  "faststart" remuxes of the MP4s (moov before mdat: a cut copy still opens);
* the first ``--demo-clips`` clips of the default demo corpus (400 AVI clips with LSMDC ids);
* lying headers: AVIs whose avih dwTotalFrames / strh dwLength (and dmlh, if any) claim 10x the real
  frame count, or half of it;
* copies of each intact file cut to 10/30/50/90 % of its bytes.

Prints a compact table; ``--out-json`` writes every measurement.

Example: python scripts/bench_truncation.py --demo-clips 400 --out-json /tmp/truncation.json
"""

from __future__ import annotations

import argparse
import fractions
import json
import logging
import os
import statistics
import struct
import sys
import tempfile
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED_VIDEOS = ROOT.parent / "shared" / "videos"
CUTS = (0.1, 0.3, 0.5, 0.9)
LIES = {"x10": 10.0, "half": 0.5}
# Groups of files that are not clips at all: intact in bytes, yet every one should be refused.
NOT_CLIPS = ("png-as-avi",)

log = logging.getLogger("bench_truncation")


@dataclass(frozen=True)
class Sample:
    """One file to measure.

    Attributes:
        name: a short label (the source's name).
        group: ``demo``, ``shared``/``synthetic`` (the originals), ``avi`` (their AVI copies),
            ``faststart`` (MP4 remuxes), ``lie-x10``/``lie-half`` (lying headers).
        cut: fraction of the bytes kept (1.0: intact).
        path: the file.
        expected: seconds the clip should last from its clip id, or None (then the header is used).
        clip_id: the LSMDC clip id of a demo clip (None: a file of a folder, judged by its header).
    """

    name: str
    group: str
    cut: float
    path: str
    expected: float | None = None
    clip_id: str | None = None


@dataclass(frozen=True)
class Measurement:
    """What one file gives (see the module docstring); durations in seconds, None when unknown."""

    sample: Sample
    header_duration: float | None
    header_frames: int | None
    header_claim: float | None
    fps: float | None
    probe_error: str | None
    decoded_duration: float | None
    decoded_frames: int
    decode_error: str | None
    scan_duration: float | None
    structure: dict = field(default_factory=dict)
    expected: float | None = None
    expected_source: str | None = None
    ratio: float | None = None
    status: str | None = None
    extraction: str | None = None
    extraction_reason: str | None = None

    @property
    def intact(self) -> bool:
        """A whole, real clip: refusing it is a false alarm."""
        return self.sample.cut == 1.0 and self.sample.group not in NOT_CLIPS


# ---------------------------------------------------------------------------------------------------
# Building the inputs.


def transcode_to_avi(src: Path, dst: Path) -> Path:
    """Re-encode every frame of ``src`` as MPEG-4 part 2 in AVI at the same rate (times from 0)."""
    import av

    tmp = dst.with_name(f".{dst.name}.tmp.avi")
    with av.open(str(src)) as inp, av.open(str(tmp), "w", format="avi") as out:
        s = inp.streams.video[0]
        rate = fractions.Fraction(s.average_rate or s.base_rate).limit_denominator(65535)
        o = out.add_stream("mpeg4", rate=rate)
        o.width, o.height, o.pix_fmt = s.width, s.height, "yuv420p"
        o.codec_context.options = {"flags": "+qscale", "qmin": "3", "qmax": "3"}
        for i, frame in enumerate(inp.decode(s)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, 1 / rate
            for pkt in o.encode(frame):
                out.mux(pkt)
        for pkt in o.encode():
            out.mux(pkt)
    os.replace(tmp, dst)
    return dst


def remux_faststart(src: Path, dst: Path) -> Path:
    """Copy the video packets of an MP4 into a new MP4 whose moov box comes before mdat."""
    import av

    tmp = dst.with_name(f".{dst.name}.tmp.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w", format="mp4",
                                            options={"movflags": "+faststart"}) as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        for pkt in inp.demux(s):
            if pkt.dts is None:  # the demuxer's final flush packet
                continue
            pkt.stream = o
            out.mux(pkt)
    os.replace(tmp, dst)
    return dst


def synthetic_sources(folder: Path) -> list[Path]:
    """Stand-ins for ../shared/videos: the same containers, with a start offset in the MPEG-PS one."""
    from moviefib.video import write_synthetic_video

    return [write_synthetic_video(folder / "syn_mpeg4.avi", 100, size=(160, 120), codec="mpeg4"),
            write_synthetic_video(folder / "syn_h264.mp4", 125, size=(160, 120), codec="libx264"),
            write_synthetic_video(folder / "syn_mpeg2.mpg", 150, size=(160, 120), codec="mpeg2video",
                                  start_frames=13)]


def demo_clips(folder: Path, n: int) -> list[tuple[Path, float, str]]:
    """The first ``n`` clips of the default demo corpus: (file, expected seconds from its id, clip id)."""
    from moviefib.demo.corpus import ANNOTATION_FILE, SPLITS, CorpusConfig, generate_corpus
    from moviefib.formats import ClipId, read_descriptions

    info = generate_corpus(folder, CorpusConfig.preset("default"), workers=min(2, os.cpu_count() or 1))
    expected = {}
    for split in SPLITS:
        for row in read_descriptions(info.path / ANNOTATION_FILE.format(split=split)):
            expected[row.clip_id] = row.end_extracted - row.start_extracted
    return [(ClipId.parse(c).video_path(info.path), expected[c], c) for c in sorted(expected)[:n]]


def lie_about_frames(src: Path, dst: Path, factor: float) -> Path:
    """Copy an AVI with its frame counts (avih dwTotalFrames, strh dwLength, dmlh) times ``factor``."""
    data = bytearray(src.read_bytes())
    i = data.index(b"avih")  # main header: dwTotalFrames at 16 bytes into the chunk's data
    real = struct.unpack_from("<I", data, i + 24)[0]
    fake = max(1, round(real * factor))
    struct.pack_into("<I", data, i + 24, fake)
    j = data.index(b"strh")  # stream header: dwLength at 32 bytes into the chunk's data
    struct.pack_into("<I", data, j + 40, fake)
    k = data.find(b"dmlh")  # OpenDML extended header: dwGrandFrames first
    if k >= 0:
        struct.pack_into("<I", data, k + 8, fake)
    dst.write_bytes(bytes(data))
    return dst


def png_named_avi(dst: Path, width: int = 64, height: int = 48) -> Path:
    """A valid PNG image under an .avi name (FFmpeg opens it as a one-frame video)."""
    rows = b"".join(b"\x00" + bytes([y * 5 % 256, 80, 160] * width) for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    dst.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return dst


def cut_copy(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


def build_samples(work: Path, *, n_demo: int, use_shared: bool) -> list[Sample]:
    """Every intact and damaged file, written under ``work``."""
    src_dir, copies, cuts = work / "sources", work / "copies", work / "cuts"
    for d in (src_dir, copies, cuts):
        d.mkdir(parents=True, exist_ok=True)
    if use_shared:
        originals = sorted(SHARED_VIDEOS.glob("*"))
        group = "shared"
    else:
        originals = synthetic_sources(src_dir)
        group = "synthetic"
    intact = [Sample(p.name, group, 1.0, str(p)) for p in originals]
    avis = []
    for p in originals:
        dst = transcode_to_avi(p, copies / f"{p.stem}.avi") if p.suffix != ".avi" else p
        avis.append(dst)
        if dst is not p:
            intact.append(Sample(p.name, "avi", 1.0, str(dst)))
    for p in originals:
        if p.suffix == ".mp4":
            intact.append(Sample(p.name, "faststart", 1.0, str(remux_faststart(p, copies / f"{p.stem}_fs.mp4"))))
    demo = demo_clips(work / "demo", n_demo) if n_demo else []
    intact += [Sample(p.stem, "demo", 1.0, str(p), expected=e, clip_id=c) for p, e, c in demo]
    liars = []
    for label, factor in LIES.items():
        for p in avis + [p for p, _, _ in demo[:1]]:
            dst = lie_about_frames(p, copies / f"{p.stem}_lie_{label}.avi", factor)
            exp, clip_id = next(((e, c) for q, e, c in demo if q == p), (None, None))
            liars.append(Sample(p.stem, f"lie-{label}", 1.0, str(dst), expected=exp, clip_id=clip_id))
    # A picture at a clip's path: as if it were the first demo clip (or with no id at all).
    liars.append(Sample("image.png", "png-as-avi", 1.0, str(png_named_avi(copies / "image.avi")),
                        expected=demo[0][1] if demo else None, clip_id=demo[0][2] if demo else None))
    damaged = []
    for s in intact:
        src = Path(s.path)
        for c in CUTS:
            dst = cut_copy(src, cuts / f"{s.group}_{src.stem}_{round(c * 100)}{src.suffix}", c)
            damaged.append(Sample(s.name, s.group, c, str(dst), expected=s.expected, clip_id=s.clip_id))
    return intact + liars + damaged


# ---------------------------------------------------------------------------------------------------
# Structural signals (stdlib: read the container's own bytes).


def avi_structure(data: bytes) -> dict:
    """RIFF size against the file size, the movi list, the idx1 index and its video entries."""
    size = len(data)
    out = {"kind": "avi", "riff_complete": False, "movi_complete": False, "idx1": False,
           "idx1_frames": None, "header_frames": None}
    if len(data) < 12 or data[:4] != b"RIFF":
        return out
    riff_end = 8 + struct.unpack_from("<I", data, 4)[0]
    out["riff_complete"] = riff_end <= size
    i = data.find(b"avih")
    if 0 <= i <= size - 28:
        out["header_frames"] = struct.unpack_from("<I", data, i + 24)[0]
    pos = 12
    while pos + 8 <= min(size, riff_end):
        cid, csize = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        end = pos + 8 + csize
        if cid == b"LIST" and data[pos + 8:pos + 12] == b"movi":
            out["movi_complete"] = end <= size
        elif cid == b"idx1" and end <= size:
            out["idx1"] = True
            # 16-byte entries; video chunks are '00dc' (compressed) or '00db'.
            entries = (data[e:e + 4] for e in range(pos + 8, end - 15, 16))
            out["idx1_frames"] = sum(1 for tag in entries if tag in (b"00dc", b"00db"))
        pos = end + (csize & 1)
    return out


def mp4_structure(data: bytes) -> dict:
    """The top-level boxes: is there a moov, and does every box (mdat included) fit in the file?"""
    size = len(data)
    boxes, pos = [], 0
    while pos + 8 <= size:
        bsize, btype = struct.unpack_from(">I", data, pos)[0], data[pos + 4:pos + 8].decode("latin-1")
        if bsize == 1 and pos + 16 <= size:
            bsize = struct.unpack_from(">Q", data, pos + 8)[0]
        elif bsize == 0:  # the box runs to the end of the file
            bsize = size - pos
        if bsize < 8:
            break
        boxes.append((btype, pos + bsize <= size))
        pos += bsize
    return {"kind": "mp4", "moov_complete": any(t == "moov" and ok for t, ok in boxes),
            "mdat_complete": all(ok for t, ok in boxes if t == "mdat"),
            "boxes_fit": all(ok for _, ok in boxes) and pos == size}


def mpegps_structure(data: bytes) -> dict:
    """An MPEG program stream ends with the end code 00 00 01 B9 (if its muxer wrote it)."""
    return {"kind": "mpeg-ps", "end_code": data.rstrip(b"\xff")[-4:] == b"\x00\x00\x01\xb9"}


def structure(path: Path) -> dict:
    data = path.read_bytes()
    if data[:4] == b"RIFF":
        return avi_structure(data)
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
        return mp4_structure(data)
    if data[:4] == b"\x00\x00\x01\xba":
        return mpegps_structure(data)
    return {"kind": "unknown"}


def looks_cut(s: dict) -> bool | None:
    """The structural verdict without any id: True cut short, False complete, None cannot tell."""
    if s["kind"] == "avi":
        return not (s["riff_complete"] and s["idx1"])
    if s["kind"] == "mp4":
        return not (s["moov_complete"] and s["boxes_fit"])
    if s["kind"] == "mpeg-ps":  # many muxers never write the end code (cityCC0.mpg has none)
        return False if s["end_code"] else None
    return None


# ---------------------------------------------------------------------------------------------------
# Measuring.


def decoded_span(path: Path, fps: float | None) -> tuple[float | None, int, str | None]:
    """(first frame to end of last frame, frames, error) from moviefib's own decoder."""
    from moviefib.video import VideoError, iter_frames

    first = last = None
    n = 0
    try:
        for t, _ in iter_frames(path):
            first = t if first is None else first
            last = t
            n += 1
    except VideoError as exc:
        return None, n, str(exc).splitlines()[0][:160]
    if n == 0:
        return 0.0, 0, None
    return last - first + (1.0 / fps if fps else 0.0), n, None


def packet_scan(path: Path, start: float, fps: float | None) -> float | None:
    """The last video packet's time, from the stream start, plus one frame period (no decoding)."""
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            times = [float(p.pts * s.time_base) for p in c.demux(s) if p.pts is not None and p.size]
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        log.debug("%s: packet scan failed (%s)", path, exc)
        return None
    if not times:
        return None
    return max(times) - start + (1.0 / fps if fps else 0.0)


def extraction_verdict(sample: Sample, sampling) -> tuple[str, str | None]:
    """What feature extraction does with the file, by its own rules (the worker loop of
    ``moviefib.features.pipeline``): ``refused`` (a failure: decoding raised, no step, or clearly
    short), ``warned`` (kept with a counted warning) or ``kept``; with the reason."""
    from moviefib.features.pipeline import ClipSource, judge_clip
    from moviefib.integrity import DurationTolerance
    from moviefib.video import DecodedSpan, VideoError
    from moviefib.video import sample as sample_steps

    # An LSMDC row's clip expects its extracted end - start; a file of a folder has only its header.
    clip = ClipSource(sample.clip_id or Path(sample.path).stem, sample.path,
                      expected_duration=sample.expected if sample.clip_id else None)
    span = DecodedSpan()
    n = 0
    try:
        for _ in sample_steps(clip.path, sampling, span=span):
            n += 1
    except VideoError as exc:
        return "refused", str(exc).splitlines()[0][:200]
    if n == 0:
        return "refused", "no step to extract"
    verdict = judge_clip(clip, span, DurationTolerance())
    return {"ok": "kept", "warn": "warned", "short": "refused"}[verdict.status], verdict.reason


def measure(sample: Sample, sampling) -> Measurement:
    from moviefib.integrity import judge_duration
    from moviefib.video import VideoError, probe

    path = Path(sample.path)
    try:
        info = probe(path)
        header, frames, fps, start, probe_error = info.duration, info.num_frames, info.fps, info.start_time, None
    except VideoError as exc:
        header = frames = fps = None
        start, probe_error = 0.0, str(exc).splitlines()[0][:160]
    # What the header states is its frame count; FFmpeg's duration of an AVI without its idx1 index
    # (any cut copy) is an estimate from the bit rate and the bytes present, so it shrinks with the cut.
    claim = frames / fps if frames and fps else header
    decoded, n, error = decoded_span(path, fps)
    expected, source = (sample.expected, "clip id") if sample.expected is not None else (claim, "header")
    ratio = status = None
    if error is not None or probe_error is not None:
        status = "error"
    elif expected:
        ratio = decoded / expected
        status = judge_duration(decoded, expected=expected, source=source).status
    extraction, why = extraction_verdict(sample, sampling)
    return Measurement(sample, header, frames, claim, fps, probe_error, decoded, n, error,
                       packet_scan(path, start, fps), structure(path), expected, source, ratio, status,
                       extraction, why)


# ---------------------------------------------------------------------------------------------------
# Reporting.


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def summary_rows(results: list[Measurement]) -> list[dict]:
    """Per group and cut level: count, decoded/expected min/median/max, errors, verdicts, structure."""
    by = defaultdict(list)
    for m in results:
        by[(m.sample.group, m.sample.cut)].append(m)
    rows = []
    for (group, cut), ms in sorted(by.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        ratios = [m.ratio for m in ms if m.ratio is not None]
        verdicts = defaultdict(int)
        for m in ms:
            verdicts[m.status or "no expected"] += 1
        cut_says = [looks_cut(m.structure) for m in ms]
        rows.append({
            "group": group, "cut": cut, "n": len(ms),
            "ratio_min": min(ratios) if ratios else None,
            "ratio_median": statistics.median(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
            "verdicts": dict(verdicts),
            "structure_says_cut": sum(1 for c in cut_says if c),
            "structure_unknown": sum(1 for c in cut_says if c is None)})
    return rows


def print_summary(rows: list[dict]) -> None:
    print(f"{'group':<11} {'kept':>5} {'n':>4}  {'ratio min':>9} {'median':>7} {'max':>7}  "
          f"{'struct:cut':>10}  verdicts (ok/warn/short/error)")
    for r in rows:
        v = r["verdicts"]
        print(f"{r['group']:<11} {r['cut'] * 100:>4.0f}% {r['n']:>4}  {_fmt(r['ratio_min']):>9} "
              f"{_fmt(r['ratio_median']):>7} {_fmt(r['ratio_max']):>7}  {r['structure_says_cut']:>10}  "
              f"{v.get('ok', 0)}/{v.get('warn', 0)}/{v.get('short', 0)}/{v.get('error', 0)}")


def caught(m: Measurement, short: float, slack: float, *, veto: bool) -> bool:
    """Would a check at ratio ``short`` (with ``slack`` seconds forgiven) refuse this file?

    ``veto``: a header-only comparison is overruled when the container's structure is complete
    (the file ends where it says it does, so its header's frame count is what lies).
    """
    if m.status == "error":
        return True
    if m.expected is None or not m.expected or m.decoded_duration is None:
        return False
    if veto and m.expected_source == "header" and looks_cut(m.structure) is False:
        return False
    return (m.decoded_duration + slack) / m.expected < short


def sweep_rows(results: list[Measurement], thresholds: list[float], slack: float) -> list[dict]:
    """For each threshold: files caught per cut level and false alarms among intact files, by source."""
    rows = []
    for veto in (False, True):
        for source in ("clip id", "header"):
            ms = [m for m in results if (m.sample.expected is not None) == (source == "clip id")]
            for t in thresholds:
                row = {"source": source, "veto": veto, "short": t, "slack": slack,
                       "false_alarms": sum(caught(m, t, slack, veto=veto) for m in ms if m.intact),
                       "intact": sum(1 for m in ms if m.intact)}
                for c in CUTS:
                    cut = [m for m in ms if m.sample.cut == c]
                    row[f"caught_{round(c * 100)}"] = sum(caught(m, t, slack, veto=veto) for m in cut)
                    row[f"n_{round(c * 100)}"] = len(cut)
                bad = [m for m in ms if m.sample.group in NOT_CLIPS]
                row["caught_not_clips"], row["n_not_clips"] = sum(caught(m, t, slack, veto=veto) for m in bad), len(bad)
                rows.append(row)
    return rows


def print_sweep(rows: list[dict]) -> None:
    print(f"\n{'expected from':<13} {'veto':<5} {'short<':>6}  {'false alarms':>12}  "
          + "  ".join(f"caught@{round(c * 100)}%" for c in CUTS) + "  not clips")
    for r in rows:
        cells = "  ".join(f"{r[f'caught_{round(c * 100)}']:>4}/{r[f'n_{round(c * 100)}']:<4}" for c in CUTS)
        cells += f"  {r['caught_not_clips']:>4}/{r['n_not_clips']:<4}"
        print(f"{r['source']:<13} {str(r['veto']):<5} {r['short']:>6.2f}  {r['false_alarms']:>5}/{r['intact']:<6}  "
              f"{cells}")


def extraction_rows(results: list[Measurement]) -> list[dict]:
    """Per kind of input (with an LSMDC id or a file of a folder) and cut level: refused/warned/kept."""
    by = defaultdict(lambda: defaultdict(int))
    for m in results:
        kind = "not a clip" if m.sample.group in NOT_CLIPS else "clip id" if m.sample.clip_id else "folder"
        level = "intact" if m.sample.cut == 1.0 else f"cut {round(m.sample.cut * 100)}%"
        by[(kind, level)][m.extraction] += 1
    order = {"intact": 0, **{f"cut {round(c * 100)}%": i + 1 for i, c in enumerate(CUTS)}}
    return [{"input": k, "level": lv, "n": sum(v.values()), **{x: v.get(x, 0) for x in ("refused", "warned", "kept")}}
            for (k, lv), v in sorted(by.items(), key=lambda kv: (kv[0][0], order[kv[0][1]]))]


def print_extraction(rows: list[dict], sampling) -> None:
    print(f"\nextraction's own check ({sampling!r}, default tolerance): refused = failure manifest")
    print(f"{'input':<11} {'level':<8} {'n':>4}  {'refused':>7} {'warned':>7} {'kept':>5}")
    for r in rows:
        print(f"{r['input']:<11} {r['level']:<8} {r['n']:>4}  {r['refused']:>7} {r['warned']:>7} {r['kept']:>5}")


def print_files(results: list[Measurement]) -> None:
    """One line per non-demo file: header, decoded, scan and the structure."""
    print(f"\n{'file':<26} {'group':<10} {'kept':>4} {'hdr s':>6} {'hdr n':>5} {'dec s':>6} {'dec n':>5} "
          f"{'scan s':>6} {'ratio':>6} {'status':<6} structure")
    for m in results:
        if m.sample.group == "demo":
            continue
        st = {k: v for k, v in m.structure.items() if k != "kind"}
        print(f"{m.sample.name[:26]:<26} {m.sample.group:<10} {m.sample.cut * 100:>3.0f}% "
              f"{_fmt(m.header_duration)[:6]:>6} {m.header_frames if m.header_frames is not None else '-':>5} "
              f"{_fmt(m.decoded_duration)[:6]:>6} {m.decoded_frames:>5} {_fmt(m.scan_duration)[:6]:>6} "
              f"{_fmt(m.ratio)[:6]:>6} {m.status or '-':<6} {m.structure['kind']} {st}")


def main(argv: list[str] | None = None) -> int:
    from moviefib.features.presets import parse_sampling
    from moviefib.integrity import DurationTolerance

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo-clips", type=int, default=400,
                    help="demo corpus clips to measure (default 400, the whole default corpus; 0: none)")
    ap.add_argument("--no-shared", action="store_true",
                    help="use synthetic stand-ins even when ../shared/videos is present")
    ap.add_argument("--work", type=Path, help="folder for the generated files (default: a temporary one)")
    ap.add_argument("--out-json", type=Path, help="write every measurement and the summary here")
    ap.add_argument("--files", action="store_true", help="also print one line per non-demo file")
    ap.add_argument("--sampling", default="every:1",
                    help="extraction's sampling for its own check (default every:1, the 2-D extractors')")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.8, 0.9],
                    help="'short' ratios to try (decoded + slack) / expected (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.demo_clips < 0:
        ap.error("--demo-clips must be >= 0")
    try:
        sampling = parse_sampling(args.sampling)
    except ValueError as exc:
        ap.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    use_shared = not args.no_shared and SHARED_VIDEOS.is_dir() and any(SHARED_VIDEOS.iterdir())
    with tempfile.TemporaryDirectory(prefix="bench_truncation_") as tmp:
        work = args.work or Path(tmp)
        samples = build_samples(work, n_demo=args.demo_clips, use_shared=use_shared)
        results = [measure(s, sampling) for s in samples]
    rows = summary_rows(results)
    print(f"inputs: {'../shared/videos' if use_shared else 'synthetic stand-ins'}, "
          f"{args.demo_clips} demo clips; ratio = decoded / expected (clip id for demo clips, else header)")
    print_summary(rows)
    sweep = sweep_rows(results, args.thresholds, DurationTolerance().slack)
    print_sweep(sweep)
    extraction = extraction_rows(results)
    print_extraction(extraction, sampling)
    if args.files:
        print_files(results)
    if args.out_json:
        from moviefib.fileio import atomic_write

        atomic_write(args.out_json, json.dumps({"summary": rows, "sweep": sweep, "extraction": extraction,
                                                "files": [asdict(m) for m in results]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
