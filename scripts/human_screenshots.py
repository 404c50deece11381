#!/usr/bin/env python
"""Screenshots of the human-answer page in text and video mode (docs/human_text.png, docs/human_video.png).

Serves a tiny synthetic dataset (two sentences about one generated clip, so no licensed material) with
``moviefib.human.server`` on localhost, drives Debian's Chromium with Playwright, and writes the PNGs.

    python scripts/human_screenshots.py [--out-dir docs] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CLIP_ID = "1001_SYNTHETIC_FILM_00.01.02.000-00.01.06.000"
SENTENCES = [("A red car drives along the empty road.", ("car", "road")),
             ("The sun sets behind the green hills.", ("sun", "hills"))]


def write_dataset(folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moviefib.formats import BLANK
    from moviefib.schema import arrow_schema

    rows = []
    for s, (sentence, words) in enumerate(SENTENCES):
        for word in words:
            i = sentence.index(word)
            rows.append(dict(
                question_id=f"demo-{len(rows)}", clip_id=CLIP_ID, movie=CLIP_ID.rsplit("_", 1)[0],
                sentence_id=f"s{s}", start_aligned=62.0, end_aligned=66.0, start_extracted=62.0,
                end_extracted=66.0, sentence=sentence, question=sentence[:i] + BLANK + sentence[i + len(word):],
                answer=word, answer_pos="NN", word_index=len(sentence[:i].split()), char_start=i,
                char_end=i + len(word)))
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema()), folder / "data" / "val.parquet")


def write_clip(video_root: Path) -> None:
    """A 4 s cartoon (sky, setting sun, hills, a red car crossing) as an AVI, like an LSMDC clip."""
    import av
    import numpy as np

    w, h, fps = 480, 270, 24
    path = video_root / CLIP_ID.rsplit("_", 1)[0] / f"{CLIP_ID}.avi"
    path.parent.mkdir(parents=True)
    yy, xx = np.mgrid[0:h, 0:w]
    sky = np.stack([90 + yy * 0.6, 140 + yy * 0.3, 230 - yy * 0.3], axis=-1)
    hills = yy > 170 + 25 * np.sin(xx / 60.0)
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qscale": "3"}
        for i in range(4 * fps):
            img = sky.copy()
            sun_y = 60 + i
            img[(xx - 330) ** 2 + (yy - sun_y) ** 2 < 30 ** 2] = (250, 200, 60)
            img[hills] = (60, 140, 60)
            img[225:] = (70, 70, 75)
            x = 10 + 4 * i
            img[205:230, x:x + 70] = (200, 30, 30)
            img[190:206, x + 15:x + 50] = (170, 20, 20)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img.clip(0, 255).astype(np.uint8), format="rgb24")))
        out.mux(stream.encode(None))


def shoot(browser, url: str, out: Path, video: bool) -> None:
    page = browser.new_page(viewport={"width": 960, "height": 780 if video else 320})
    page.goto(url)
    page.fill("#annotator", "annotator-1")
    page.click("#start")
    page.wait_for_selector("#task", state="visible")
    if video:
        page.wait_for_function("Number(document.getElementById('video-state').dataset.readyState) >= 2",
                               timeout=60_000)
        page.wait_for_timeout(1500)  # let it play to a frame where the car is in view
    page.fill("#answer", "sun")
    page.screenshot(path=str(out))
    page.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log on the terminal

    from playwright.sync_api import sync_playwright

    from moviefib.human.server import HumanServer, make_app

    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset(tmp / "synthetic")
        write_clip(tmp / "videos")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            for mode in ("text", "video"):
                app = make_app(tmp / "synthetic", "val", mode, tmp / f"{mode}.jsonl",
                               video_root=tmp / "videos", cache_dir=tmp / "cache")
                with HumanServer(app) as server:
                    out = args.out_dir / f"human_{mode}.png"
                    shoot(browser, server.url, out, mode == "video")
                    print(f"wrote {out}")
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
