"""Files written by an earlier release still load: its ``best.pt`` predicts what it predicted then, its
``last.pt`` resumes, its feature store reads with its records.

The files are not committed (checkpoints and stores are outputs, not sources): each release listed in
:data:`RELEASES` is taken from the repository's history (``git archive``) into a temporary folder, and
``tests/compat/make_fixtures.py`` runs there, on that release's own code, to write them (tiny
random-init models on the toy task). Without the git history (a shallow clone, an unpacked archive)
the tests skip with a reason.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")
pytest.importorskip("av")

from test_train import write_toy  # noqa: E402

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.features.store import open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The releases whose files must still load: commits of main (the last before issue 13's restructuring).
RELEASES = ("38b4fbb",)
# What make_fixtures.py needs of a release: its package, its recipes and the toy task of its tests.
_RELEASE_PATHS = ("moviefib", "baselines", "tests/test_train.py")


def _archive(commit: str, into: Path) -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("no git history here: the earlier release cannot be checked out")
    proc = subprocess.run([git, "-C", str(ROOT), "archive", "--format=tar", commit, *_RELEASE_PATHS],
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"release {commit} is not in this clone's history (shallow clone?): "
                    f"{proc.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(into, filter="data")


@pytest.fixture(scope="module", params=RELEASES)
def release(request, tmp_path_factory) -> Path:
    """The files release ``request.param`` writes, made by its own code."""
    tree = tmp_path_factory.mktemp(f"release_{request.param}")
    _archive(request.param, tree)
    (tree / "tests" / "compat").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "compat" / "make_fixtures.py", tree / "tests" / "compat")
    out = tree / "files"
    # The release's package first on the path, so that nothing of this checkout is imported (checked).
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, str(tree / "tests" / "compat" / "make_fixtures.py"), str(out)],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path((out / "made_by.txt").read_text()).is_relative_to(tree)
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("compat_toy"))


def test_best_pt_predicts_as_it_did(release, toy, tmp_path):
    out = tmp_path / "pred.tsv"
    assert cli_main(["predict", str(release / "best.pt"), str(toy / "dataset"), "--split", "test",
                     "--features-dir", str(toy / "features"), "--out", str(out), "--no-progress"]) == 0
    assert out.read_text() == (release / "predictions_test.tsv").read_text()


def test_last_pt_resumes(release, toy, tmp_path):
    config = json.loads((release / "metrics.json").read_text())["config"]
    run = tmp_path / "run"
    args = ["train", "text_2d3d", "--dataset", str(toy / "dataset"),
            "--features-dir", str(toy / "features"), "--out", str(run),
            "--resume", str(release / "last.pt"), "--no-progress"]
    for key in ("emb_dim", "hidden", "dropout"):
        args += ["--set", f"model.{key}={json.dumps(config['model'][key])}"]
    args += ["--set", "features.2d=toy_2d", "--set", "features.3d=toy_3d", "--set", "train.epochs=3",
             "--set", "train.batch_size=16", "--set", "train.lr=0.01", "--set", "train.threads=1"]
    assert cli_main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]) == 3  # two epochs of the old run, one new


def test_extracted_store_reads_with_its_records(release):
    with open_store(release / "store_extracted.h5") as store:
        assert sorted(store.clip_ids()) == ["clip0", "clip1", "clip2"]
        for clip_id, frames in zip(["clip0", "clip1", "clip2"], (12, 16, 20)):
            got = store.get(clip_id)
            assert got.features.shape == (frames // 4, 5) and np.isfinite(got.features).all()
            record = store.record(clip_id)
            assert record is not None and record.source is not None and not record.partial
