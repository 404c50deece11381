"""Files written by an earlier release still load: its ``best.pt`` predicts what it predicted then, its
``last.pt`` resumes, its feature store reads with its records.

The files are made by each release's own code, taken from git history (the ``compat_release``
fixture of ``conftest.py``); without the history the tests skip with a reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")
pytest.importorskip("av")

from test_train import write_toy  # noqa: E402

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.features.store import open_store  # noqa: E402


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("compat_toy"))


def test_best_pt_predicts_as_it_did(compat_release, toy, tmp_path):
    out = tmp_path / "pred.tsv"
    assert cli_main(["predict", str(compat_release / "best.pt"), str(toy / "dataset"), "--split", "test",
                     "--features-dir", str(toy / "features"), "--out", str(out), "--no-progress"]) == 0
    assert out.read_text() == (compat_release / "predictions_test.tsv").read_text()


def test_last_pt_resumes(compat_release, toy, tmp_path):
    config = json.loads((compat_release / "metrics.json").read_text())["config"]
    run = tmp_path / "run"
    args = ["train", "text_2d3d", "--dataset", str(toy / "dataset"),
            "--features-dir", str(toy / "features"), "--out", str(run),
            "--resume", str(compat_release / "last.pt"), "--no-progress"]
    for key in ("emb_dim", "hidden", "dropout"):
        args += ["--set", f"model.{key}={json.dumps(config['model'][key])}"]
    args += ["--set", "features.2d=toy_2d", "--set", "features.3d=toy_3d", "--set", "train.epochs=3",
             "--set", "train.batch_size=16", "--set", "train.lr=0.01", "--set", "train.threads=1"]
    assert cli_main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]) == 3  # two epochs of the old run, one new


def test_extracted_store_reads_with_its_records(compat_release):
    with open_store(compat_release / "store_extracted.h5") as store:
        assert sorted(store.clip_ids()) == ["clip0", "clip1", "clip2"]
        for clip_id, frames in zip(["clip0", "clip1", "clip2"], (12, 16, 20)):
            got = store.get(clip_id)
            assert got.features.shape == (frames // 4, 5) and np.isfinite(got.features).all()
            record = store.record(clip_id)
            assert record is not None and record.source is not None and not record.partial
