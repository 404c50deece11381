"""train() as named steps: the callbacks it reports to (the library draws no bar unless asked), a
config given as the nested dict of earlier releases, train-then-score as one library call, a bad
torchrun environment, and the length of the training code's functions."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("h5py")

from test_train import TINY_MODEL, TINY_TRAIN, TOY_FEATURES, write_toy  # noqa: E402

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.exits import EXIT_INVALID  # noqa: E402
from moviefib.train import TrainProgress, load_config, train, train_and_score  # noqa: E402
from moviefib.training.inputs import read_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LONG_FUNCTION = 80  # lines: issue 13
TRAINING_CODE = [ROOT / "moviefib" / "train.py", ROOT / "moviefib" / "data.py", ROOT / "moviefib" / "cli" / "train.py",
                 *sorted((ROOT / "moviefib" / "training").glob("*.py")),
                 *sorted((ROOT / "moviefib" / "models").glob("*.py"))]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("steps_toy"))


def _config(toy: Path, out: Path, *extra: str):
    return load_config("text_2d", [
        f"data.dataset={json.dumps(str(toy / 'dataset'))}", f"features.dir={json.dumps(str(toy / 'features'))}",
        f"train.out_dir={json.dumps(str(out))}", *TOY_FEATURES, *TINY_MODEL, *TINY_TRAIN, *extra])


class Recorder(TrainProgress):
    def __init__(self):
        self.calls = []

    def epoch_started(self, epoch, epochs, batches):
        self.calls.append(("start", epoch, epochs, batches))

    def batch_done(self, batch, figures):
        self.calls.append(("batch", batch, figures.n_seen, round(figures.loss, 6)))

    def epoch_done(self, row):
        self.calls.append(("done", row["epoch"]))


def test_callbacks_hear_every_epoch_and_batch(toy, tmp_path, capsys):
    recorder = Recorder()
    result = train(_config(toy, tmp_path / "run", "train.epochs=2", "train.max_batches=3"), progress=recorder)
    starts = [c for c in recorder.calls if c[0] == "start"]
    assert starts == [("start", 1, 2, 3), ("start", 2, 2, 3)]
    assert [c[1:3] for c in recorder.calls if c[0] == "batch"] == [(1, 16), (2, 32), (3, 48)] * 2
    assert [c for c in recorder.calls if c[0] == "done"] == [("done", 1), ("done", 2)]
    # The running loss the callback saw last is the epoch's reported loss.
    last_batch = [c for c in recorder.calls if c[0] == "batch"][-1]
    assert last_batch[3] == pytest.approx(result.metrics["history"][-1]["train_loss"], abs=1e-5)
    assert "epoch 1/2" not in capsys.readouterr().err  # a caller's callbacks replace the bar


def test_no_bar_unless_asked(toy, tmp_path, capfd):
    train(_config(toy, tmp_path / "quiet", "train.epochs=1", "train.max_batches=2"))  # train.progress=false
    assert "epoch 1/1" not in capfd.readouterr().err
    train(_config(toy, tmp_path / "bar", "train.epochs=1", "train.max_batches=2", "train.progress=true"))
    assert "epoch 1/1" in capfd.readouterr().err
    assert load_config(None).train.progress is False  # a library caller gets no bar by default


def test_a_nested_dict_trains_as_its_typed_config(toy, tmp_path):
    typed = train(_config(toy, tmp_path / "typed", "train.epochs=1"))
    as_dict = _config(toy, tmp_path / "dict", "train.epochs=1").to_dict()
    untyped = train(as_dict)
    assert untyped.metrics["history"][0]["train_loss"] == typed.metrics["history"][0]["train_loss"]
    as_dict["train"]["epochs"] = "one"
    with pytest.raises(ValueError, match=r"config: train\.epochs = 'one': expected an integer >= 0"):
        train(as_dict)


def test_zero_epochs_validates_and_saves_the_model_as_built(toy, tmp_path):
    """train.epochs = 0 (zero-shot): no training step, the model as built is validated and saved."""
    from moviefib.train import load_checkpoint, predict

    result = train(_config(toy, tmp_path / "zero", "train.epochs=0"))
    assert result.epochs_run == 0 and result.best_epoch == 0 and result.metrics["history"] == []
    assert result.metrics["zero_shot"]["val_acc"] == result.best_val_acc and result.metrics["finished"]
    assert not (tmp_path / "zero" / "last.pt").exists()
    _, ckpt = load_checkpoint(result.best_checkpoint)
    assert ckpt["epoch"] == 0 and ckpt["val_acc"] == result.best_val_acc
    answers = predict(result.best_checkpoint, toy / "dataset", split="val", device="cpu")
    gold = dict(zip(*read_split(toy / "dataset", "val").select(["question_id", "answer"]).to_pydict().values()))
    assert sum(answers[q] == a for q, a in gold.items()) / len(gold) == pytest.approx(result.best_val_acc)
    with pytest.raises(ValueError, match=r"train\.epochs = 0 \(zero-shot\) trains nothing"):
        train(_config(toy, tmp_path / "zero2", "train.epochs=0", f"train.resume={json.dumps(str(tmp_path))}"))


def test_metrics_count_the_trainable_parameters(toy, tmp_path):
    from moviefib.train import load_checkpoint

    result = train(_config(toy, tmp_path / "run", "train.epochs=1", "train.max_batches=1"))
    model, _ = load_checkpoint(result.best_checkpoint)
    total = sum(p.numel() for p in model.parameters())
    assert result.metrics["parameters"] == {"total": total, "trainable": total}


def test_train_and_score_is_one_call(toy, tmp_path):
    scored = train_and_score(_config(toy, tmp_path / "run", "train.epochs=1"))
    assert scored.predictions.is_file() and scored.evaluation_file.is_file()
    report = json.loads(scored.evaluation_file.read_text())
    assert report["submissions"][0]["accuracy"] == pytest.approx(scored.result.best_val_acc)
    assert scored.evaluation is not None


def test_a_bad_torchrun_environment_is_one_line(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "two")
    sets = [a for kv in TINY_MODEL + TINY_TRAIN + TOY_FEATURES for a in ("--set", kv)]
    code = cli_main(["train", "text_2d", "--dataset", str(toy / "dataset"), "--features-dir", str(toy / "features"),
                     "--out", str(tmp_path / "run"), *sets])
    err = capsys.readouterr().err
    assert code == EXIT_INVALID and "Traceback" not in err
    assert err.strip().endswith("WORLD_SIZE='two': expected an integer (set by torchrun)")
    assert not (tmp_path / "run" / "last.pt").exists()


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", TRAINING_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_of_the_training_code_is_long(path):
    long = [(name, n) for name, n in _functions(path) if n > LONG_FUNCTION]
    assert not long, long
