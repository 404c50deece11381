"""Training, checkpoints, prediction and the train/predict commands, on a tiny learnable task.

The task: every question's text is random; its answer is a colour that only the clip's video features
show (2D and 3D streams both carry it, under noise). A model that ignores its video path is stuck
near chance, like ``text_only``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pa = pytest.importorskip("pyarrow")
pytest.importorskip("h5py")

import pyarrow.parquet as pq  # noqa: E402

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.data import MissingFeaturesError, build_answer_vocab  # noqa: E402
from moviefib.features.store import write_store  # noqa: E402
from moviefib.schema import arrow_schema  # noqa: E402
from moviefib.train import ConfigError, load_checkpoint, load_config, predict, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLOURS = ["red", "green", "blue", "black"]
WORDS = [f"w{i}" for i in range(20)]
SPLITS = {"train": (0, 64, 2), "val": (64, 40, 1), "test": (104, 16, 1)}  # first clip, clips, questions/clip
TINY_MODEL = ["model.emb_dim=8", "model.hidden=16", "model.dropout=0.0"]
TOY_FEATURES = ["features.2d=toy_2d", "features.3d=toy_3d"]
TINY_TRAIN = ["train.batch_size=16", "train.lr=0.01", "train.progress=false", "train.threads=1"]


def _clip(k: int) -> str:
    return f"0001_TOY_MOVIE_00.01.{k // 10:02d}.{(k % 10) * 100:03d}-00.01.{k // 10 + 2:02d}.000"


def _label(k: int) -> int:
    return (k * 7 + k // 4) % 4


def _write_split(folder: Path, split: str, first: int, n_clips: int, per_clip: int, skip_clip=None):
    rng = np.random.default_rng(first)
    rows = {name: [] for name in arrow_schema().names}
    for k in range(first, first + n_clips):
        for q in range(per_clip):
            left, right = list(rng.choice(WORDS, 3)), list(rng.choice(WORDS, 3))
            answer = COLOURS[_label(k)]
            sentence = " ".join([*left, answer, *right])
            question = " ".join([*left, "_____", *right])
            values = dict(question_id=f"{split}-{k}-{q}", clip_id=_clip(k), movie="0001_TOY_MOVIE",
                          sentence_id=f"{split}-{k}-{q}", start_aligned=60.0 + k, end_aligned=62.0 + k,
                          start_extracted=60.0 + k, end_extracted=62.0 + k, sentence=sentence,
                          question=question, answer=answer, answer_pos="JJ", word_index=3,
                          char_start=len(" ".join(left)) + 1, char_end=len(" ".join(left)) + 1 + len(answer))
            for name, v in values.items():
                rows[name].append(v)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=arrow_schema()), folder / "data" / f"{split}.parquet")


def _write_features(fdir: Path, skip: set[int] = frozenset()):
    rng = np.random.default_rng(0)
    clips = [k for first, n, _ in SPLITS.values() for k in range(first, first + n) if k not in skip]
    # Not named like the paper presets: those promise 1024-d / 4096-d features.
    for preset, dim, steps in (("toy_2d", 8, 9), ("toy_3d", 12, 3)):
        def items(dim=dim, steps=steps):
            for k in clips:
                feats = rng.normal(0, 0.5, (steps, dim))
                feats[:, _label(k)] += 2.0
                yield _clip(k), feats, (np.arange(steps) + 0.5) * 2.0 / steps
        write_store(fdir / f"{preset}.h5", items(), {"preset": preset, "toy": True})


def write_toy(root: Path) -> Path:
    """The toy dataset (``root/dataset``) and its feature stores (``root/features``)."""
    for split, (first, n, per) in SPLITS.items():
        _write_split(root / "dataset", split, first, n, per)
    (root / "features").mkdir()
    _write_features(root / "features")
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("toy"))


def _config(toy: Path, name: str, out: Path, *extra: str) -> dict:
    return load_config(ROOT / "moviefib" / "recipes" / f"{name}.toml", [
        f"data.dataset={json.dumps(str(toy / 'dataset'))}", f"features.dir={json.dumps(str(toy / 'features'))}",
        f"train.out_dir={json.dumps(str(out))}", *TOY_FEATURES, *(TINY_MODEL if name.startswith("text") else ()),
        *TINY_TRAIN, *extra])


@pytest.fixture(scope="module")
def text_only_acc(toy, tmp_path_factory) -> float:
    res = train(_config(toy, "text_only", tmp_path_factory.mktemp("t"), "train.epochs=2"))
    return res.best_val_acc


@pytest.mark.parametrize("name", ["text_2d", "text_3d", "text_2d3d", "text_2d3d_early"])
def test_vision_baselines_beat_text_only_on_a_visual_task(toy, tmp_path, text_only_acc, name):
    res = train(_config(toy, name, tmp_path, "train.epochs=2"))
    assert text_only_acc < 0.5
    assert res.best_val_acc >= 0.8 and res.best_val_acc >= text_only_acc + 0.3, (res.best_val_acc, text_only_acc)


def test_checkpoint_round_trip_and_predict(toy, tmp_path):
    res = train(_config(toy, "text_2d3d", tmp_path / "run", "train.epochs=2"))
    assert res.best_checkpoint.is_file() and (tmp_path / "run" / "last.pt").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["finished"] and metrics["best_val_acc"] == res.best_val_acc and len(metrics["history"]) == 2
    model, ckpt = load_checkpoint(res.best_checkpoint)
    assert set(ckpt["answer_vocab"]) == set(COLOURS)
    assert set(ckpt["features"]) == {"2d", "3d"} and ckpt["features"]["3d"]["provenance"]["preset"] == "toy_3d"
    assert ckpt["features"]["2d"]["dim"] == 8 and not model.training
    answers = predict(res.best_checkpoint, toy / "dataset", "val")
    gold = pq.read_table(toy / "dataset" / "data" / "val.parquet").to_pydict()
    acc = np.mean([answers[q] == a for q, a in zip(gold["question_id"], gold["answer"])])
    assert len(answers) == 40 and acc == pytest.approx(res.best_val_acc)


def test_same_seed_same_run_on_cpu(toy, tmp_path):
    runs = [train(_config(toy, "text_2d", tmp_path / f"r{i}", "train.epochs=1", f"train.seed={s}"))
            for i, s in enumerate((3, 3, 4))]
    states = [torch.load(r.best_checkpoint, weights_only=True)["state_dict"] for r in runs]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert runs[0].metrics["history"][0]["train_loss"] == runs[1].metrics["history"][0]["train_loss"]
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_resume_continues_where_it_stopped(toy, tmp_path):
    full = train(_config(toy, "text_2d", tmp_path / "full", "train.epochs=2"))
    train(_config(toy, "text_2d", tmp_path / "part", "train.epochs=1"))
    resumed = train(_config(toy, "text_2d", tmp_path / "part", "train.epochs=2",
                            f"train.resume={json.dumps(str(tmp_path / 'part' / 'last.pt'))}"))
    assert resumed.epochs_run == 2
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k], b[k]) for k in a)
    assert [h["val_acc"] for h in full.metrics["history"]] == [h["val_acc"] for h in resumed.metrics["history"]]


def test_missing_features_error_names_the_clip_or_skips(toy, tmp_path):
    fdir = tmp_path / "features"
    fdir.mkdir()
    _write_features(fdir, skip={5})
    cfg = _config(toy, "text_3d", tmp_path / "run", "train.epochs=1", f"features.dir={json.dumps(str(fdir))}")
    with pytest.raises(MissingFeaturesError, match=f"clip {_clip(5)} has no 3d features"):
        train(cfg)
    res = train(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, missing="skip")))
    assert res.metrics["skipped_train"] == 2 and res.metrics["n_train"] == 126


def test_answer_vocabulary_presets_and_oov_errors(toy, tmp_path):
    counts = {"her": 60, "him": 51, "door": 50, "eyes": 3}
    assert build_answer_vocab(counts, preset="paper") == ["her", "him"]
    assert build_answer_vocab(counts, preset="topk", k=3) == ["her", "him", "door"]
    with pytest.raises(ValueError, match="leaves no answer"):
        build_answer_vocab({"a": 2}, preset="paper")
    # With 3 of the 4 colours as classes, the questions of the 4th are errors whatever the model says.
    res = train(_config(toy, "majority", tmp_path, "data.top_k=3"))
    assert res.metrics["answer_vocab_size"] == 3 and 0 < res.metrics["val_oov_rate"] < 0.5
    assert res.best_val_acc <= 1 - res.metrics["val_oov_rate"]


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(ROOT / "moviefib" / "recipes" / "text_2d3d.toml", ["train.lr=1e-3", "model.batch_norm=true",
                                                              "features.2d=my_2d", "data.top_k=50"])
    assert cfg.train.lr == 1e-3 and cfg.model.settings.batch_norm is True
    assert cfg.features.preset_2d == "my_2d" and cfg.data.top_k == 50
    assert cfg.train.batch_size == 24 and cfg.model.settings.hidden == 320 and cfg.data.max_steps == 15
    with pytest.raises(ConfigError, match="unknown key train.lrr"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["lr=1"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_cli_train_then_predict(toy, tmp_path, capsys):
    recipe = str(ROOT / "moviefib" / "recipes" / "text_3d.toml")
    sets = [a for kv in TINY_MODEL + TINY_TRAIN + TOY_FEATURES + ["train.epochs=1"] for a in ("--set", kv)]
    code = cli_main(["train", recipe, "--dataset", str(toy / "dataset"), "--features-dir", str(toy / "features"),
                     "--out", str(tmp_path / "run"), "--score", *sets])
    printed = capsys.readouterr().out
    assert code == 0 and "best val accuracy" in printed
    scored = json.loads((tmp_path / "run" / "val_evaluation.json").read_text())
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best_val_acc"]
    assert scored["submissions"][0]["accuracy"] == pytest.approx(best)
    out = tmp_path / "sub.tsv"
    code = cli_main(["predict", str(tmp_path / "run" / "best.pt"), str(toy / "dataset"), "--split", "test",
                     "--out", str(out)])
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "question_id\tanswer" and len(lines) == 17
    assert all(line.split("\t")[1] in COLOURS for line in lines[1:])
    code = cli_main(["train", recipe, "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 3 and "nowhere" in err and "Traceback" not in err
    code = cli_main(["predict", str(tmp_path / "nope.pt"), str(toy / "dataset"), "--out", str(out)])
    assert code == 3 and "nope.pt: no such checkpoint" in capsys.readouterr().err


def test_results_table_is_filled_from_metrics(toy, tmp_path):
    import subprocess
    import sys

    train(_config(toy, "majority", tmp_path / "runs" / "majority"))
    train(_config(toy, "context_lookup", tmp_path / "runs" / "context_lookup"))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:start -->\nold\n<!-- results:end -->\ntail\n")
    script = ROOT / "scripts" / "results_table.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "runs"), "--readme", str(readme)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = readme.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| majority") or line.startswith("| context")]
    assert len(rows) == 2 and rows[0].startswith("| majority") and "old" not in text and text.endswith("tail\n")
    acc = json.loads((tmp_path / "runs" / "majority" / "metrics.json").read_text())["best_val_acc"]
    assert f"{100 * acc:.2f} %" in rows[0]
    check = subprocess.run([sys.executable, str(script), str(tmp_path / "runs"), "--readme", str(readme), "--check"])
    assert check.returncode == 0


def test_streams_are_aligned_by_time(tmp_path):
    from moviefib.data import FIBDataset, WordVocab
    from moviefib.dataset import QuestionItem
    from moviefib.features.store import open_store

    # Each step's features hold its own timestamp, so the batch shows which steps were picked.
    t2d, t3d = (np.arange(30) + 0.5) / 10, np.array([0.42, 1.27, 2.18, 2.91])
    write_store(tmp_path / "a.h5", [("c1", np.tile(t2d[:, None], (1, 2)), t2d)], {})
    write_store(tmp_path / "b.h5", [("c1", np.tile(t3d[:, None], (1, 3)), t3d)], {})
    stores = {"2d": open_store(tmp_path / "a.h5"), "3d": open_store(tmp_path / "b.h5")}
    words = WordVocab(("<pad>", "<unk>", "<s>", "</s>", "a"))
    item = QuestionItem("q", "c1", ("a",), ("b", "a"), "x", 0)
    sample = FIBDataset([item], words, stores=stores)[0]
    assert sample["left"] == [2, 4] and sample["right"] == [3, 4, 1]  # right side reversed
    video = sample["video"]
    assert video.shape == (4, 5)
    assert np.allclose(video[:, 2:], t3d[:, None], atol=1e-3)  # the 3D stream (fewest steps) is the clock
    assert np.allclose(video[:, 0], [0.45, 1.25, 2.15, 2.95], atol=1e-3)  # nearest 2D steps in time
    few = FIBDataset([item], words, stores=stores, max_steps=2)[0]["video"]
    assert np.allclose(few[:, 2], [0.42, 2.91], atol=1e-3)  # uniform subsampling at test time


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("MOVIEFIB_TEST_GPU") != "1" or not torch.cuda.is_available(),
                    reason="GPU test: set MOVIEFIB_TEST_GPU=1 on a machine with CUDA")
@pytest.mark.parametrize("batch_norm", ["false", "true"])
def test_cuda_mixed_precision_training(toy, tmp_path, batch_norm):
    res = train(_config(toy, "text_2d3d", tmp_path, "train.epochs=3", 'train.device="cuda"', "train.amp=true",
                        f"model.batch_norm={batch_norm}", "data.num_workers=2"))
    assert res.best_val_acc >= 0.8
    _, ckpt = load_checkpoint(res.best_checkpoint, device="cpu")
    assert ckpt["config"]["train"]["amp"] is True


def test_video_standardisation_uses_training_statistics_and_travels_with_the_checkpoint(toy, tmp_path):
    from moviefib.data import FIBDataset, open_stream_stores, video_statistics
    from moviefib.train import prepare_splits

    config = _config(toy, "text_2d3d", tmp_path / "run", "train.epochs=1", "model.standardise_video=true")
    _, words, train_view, _ = prepare_splits(config)
    stores = open_stream_stores(("2d", "3d"), config.features.presets(), config.features.dir)
    mean, std = video_statistics(FIBDataset(train_view, words, stores=stores))
    # Direct computation over the 64 training clips' steps, each stream on its own.
    direct = [np.concatenate([np.asarray(stores[s].get(_clip(k)).features, np.float64) for k in range(64)])
              for s in ("2d", "3d")]
    assert mean.shape == std.shape == (8 + 12,)
    np.testing.assert_allclose(mean, np.concatenate([d.mean(0) for d in direct]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, np.concatenate([d.std(0) for d in direct]), rtol=1e-4, atol=1e-5)

    res = train(config)
    model, _ = load_checkpoint(res.best_checkpoint)
    assert model.standardise_video
    np.testing.assert_allclose(model.video_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    answers = predict(res.best_checkpoint, toy / "dataset", "val")
    gold = pq.read_table(toy / "dataset" / "data" / "val.parquet").to_pydict()
    assert np.mean([answers[q] == a for q, a in zip(gold["question_id"], gold["answer"])]) == pytest.approx(
        res.best_val_acc)


def test_a_nan_loss_stops_the_run_in_one_line_and_saves_nothing_of_that_epoch(toy, tmp_path, monkeypatch):
    """A loss that turns NaN (a diverged run) was trained on as 0 and the run went on."""
    from moviefib.models.registry import registered
    from moviefib.train import DivergedError

    train(_config(toy, "text_2d", tmp_path / "run", "train.epochs=1"))
    saved = (tmp_path / "run" / "last.pt").read_bytes()
    cls = registered("text_2d").factory
    forward, calls = cls.forward, []

    def diverging(self, batch):
        logits = forward(self, batch)
        calls.append(self.training)
        return logits * float("nan") if sum(calls) > 2 else logits

    monkeypatch.setattr(cls, "forward", diverging)
    with pytest.raises(DivergedError, match=r"^epoch 2: the training loss was NaN or inf in 6 of 8 batches: "
                                            r"training diverged \(lower train.lr, or set train.clip_grad\)"):
        train(_config(toy, "text_2d", tmp_path / "run", "train.epochs=2",
                      f"train.resume={json.dumps(str(tmp_path / 'run' / 'last.pt'))}"))
    assert (tmp_path / "run" / "last.pt").read_bytes() == saved
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]) == 1
