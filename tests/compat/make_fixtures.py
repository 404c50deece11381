"""Writes what a release of MovieFIB wrote, for the test that later code still reads it
(``tests/test_compat.py``, which runs this file inside that release's tree, taken from git history):

    PYTHONPATH=<release tree> python <release tree>/tests/compat/make_fixtures.py OUT

It writes ``best.pt``/``last.pt`` of a tiny ``text_2d3d`` run on the toy task of ``tests/test_train.py``
(two epochs), that run's ``metrics.json`` and test-split predictions, and a feature store written by the
extraction pipeline (format 2: source identities, durations) from three synthetic clips, with the
features a random-init extractor made of them. All files are small and random-init: no weights of any
published model.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_train import TINY_MODEL, TINY_TRAIN, TOY_FEATURES, write_toy  # noqa: E402

from moviefib.features.pipeline import ClipSource, extract  # noqa: E402
from moviefib.features.registry import Extractor  # noqa: E402
from moviefib.train import load_config, predict, train, write_predictions  # noqa: E402
from moviefib.video import EveryKth, write_synthetic_video  # noqa: E402


def _tiny_extractor() -> Extractor:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()

    def pre(frames):
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        return torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)

    return Extractor("compat2d", "2d", model, pre, 5, provenance={"weights": "random-init"})


def main(out: Path) -> None:
    import moviefib

    out.mkdir(parents=True, exist_ok=True)
    (out / "made_by.txt").write_text(moviefib.__file__)  # which code wrote the files (the test checks it)
    with tempfile.TemporaryDirectory() as tmp:
        toy = write_toy(Path(tmp) / "toy")
        run = Path(tmp) / "run"
        config = load_config(ROOT / "baselines" / "text_2d3d.toml", [
            f"data.dataset={json.dumps(str(toy / 'dataset'))}", f"features.dir={json.dumps(str(toy / 'features'))}",
            f"train.out_dir={json.dumps(str(run))}", *TOY_FEATURES, *TINY_MODEL, *TINY_TRAIN,
            "train.epochs=2"])
        train(config)
        for name in ("best.pt", "last.pt", "metrics.json"):
            shutil.copy(run / name, out / name)
        answers = predict(run / "best.pt", toy / "dataset", "test", features_dir=toy / "features")
        write_predictions(answers, out / "predictions_test.tsv")

        videos = Path(tmp) / "videos"
        videos.mkdir()
        clips = []
        for i, frames in enumerate((12, 16, 20)):
            path = videos / f"clip{i}.mkv"
            write_synthetic_video(path, frames, size=(32, 24))
            clips.append(ClipSource(f"clip{i}", str(path)))
        extract(clips, out / "store_extracted.h5", _tiny_extractor(), EveryKth(4), num_workers=0, amp=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
