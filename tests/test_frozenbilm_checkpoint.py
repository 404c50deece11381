"""FrozenBiLM's checkpoints as train.init_from: synthetic state dicts with FrozenBiLM's key names and
shapes (written from its model/deberta.py and model/bert.py, not from Hugging Face's names) for the tiny
DeBERTa-V2 and BERT of test_bilm, converted, loaded, trained from zero-shot and rebuilt; every bad file
one line through ``moviefib train``."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from bilm_models import save_tiny_lms  # noqa: E402
from test_bilm import ANSWERS, DIMS, _batch, _build, _samples  # noqa: E402
from test_train import TOY_FEATURES, write_toy  # noqa: E402

from moviefib.cli import main as cli_main  # noqa: E402
from moviefib.models.frozenbilm_checkpoint import ConversionError, convert_state_dict  # noqa: E402
from moviefib.train import load_checkpoint, predict  # noqa: E402

# Keys FrozenBiLM's files hold that this model does not load (module doc of frozenbilm_checkpoint).
NOT_LOADED = {
    "deberta": {"answer_embeddings.weight", "answer_bias", "deberta.embeddings.position_ids",
                "deberta.embeddings.position_embeddings.weight", "lm_predictions.lm_head.decoder.weight",
                "lm_predictions.lm_head.decoder.bias"},
    "bert": {"answer_embeddings.weight", "answer_bias", "bert.embeddings.position_ids"},
}


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict[str, str]:
    """The tiny random BERT and DeBERTa-V2 (relative attention, no absolute positions) of test_bilm."""
    return save_tiny_lms(tmp_path_factory.mktemp("lms"), ("bert", "deberta"))


def _linear(prefix: str, rows: int, cols: int) -> dict:
    return {f"{prefix}.weight": (rows, cols), f"{prefix}.bias": (rows,)}


def _norm(prefix: str, width: int) -> dict:
    return {f"{prefix}.weight": (width,), f"{prefix}.bias": (width,)}


def _deberta_shapes(c, *, video_dim: int, n_ans: int, factor: int = 8) -> dict:
    """FrozenBiLM's DebertaV2ForMaskedLM: name -> shape (its DebertaV2Embeddings always makes
    position_embeddings and a persistent position_ids; adapters after both outputs of every layer;
    lm_head.decoder tied to the word embeddings and lm_head.bias)."""
    e, inter, v, p = c.hidden_size, c.intermediate_size, c.vocab_size, c.max_position_embeddings
    out = {"deberta.embeddings.word_embeddings.weight": (v, e), "deberta.embeddings.position_embeddings.weight": (p, e),
           "deberta.embeddings.position_ids": (1, p), **_norm("deberta.embeddings.LayerNorm", e),
           **_linear("deberta.embeddings.linear_video", e, video_dim)}
    for i in range(c.num_hidden_layers):
        layer = f"deberta.encoder.layer.{i}"
        for proj in ("query_proj", "key_proj", "value_proj"):
            out.update(_linear(f"{layer}.attention.self.{proj}", e, e))
        for block, width_in in (("attention.output", e), ("output", inter)):
            out.update({**_linear(f"{layer}.{block}.dense", e, width_in), **_norm(f"{layer}.{block}.LayerNorm", e),
                        **_linear(f"{layer}.{block}.adapter.down", e // factor, e),
                        **_linear(f"{layer}.{block}.adapter.up", e, e // factor)})
        out.update(_linear(f"{layer}.intermediate.dense", inter, e))
    out.update({"deberta.encoder.rel_embeddings.weight": (2 * c.position_buckets, e),
                **_norm("deberta.encoder.LayerNorm", e), **_linear("lm_predictions.lm_head.dense", e, e),
                **_norm("lm_predictions.lm_head.LayerNorm", e), "lm_predictions.lm_head.bias": (v,),
                "lm_predictions.lm_head.decoder.weight": (v, e), "lm_predictions.lm_head.decoder.bias": (v,),
                "answer_embeddings.weight": (n_ans, e), "answer_bias": (n_ans,)})
    return out


def _bert_shapes(c, *, video_dim: int, n_ans: int) -> dict:
    """FrozenBiLM's BertForMaskedLM: no pooler, no adapters; cls.predictions.decoder tied to the word
    embeddings and cls.predictions.bias."""
    e, inter, v, p = c.hidden_size, c.intermediate_size, c.vocab_size, c.max_position_embeddings
    out = {"bert.embeddings.word_embeddings.weight": (v, e), "bert.embeddings.position_embeddings.weight": (p, e),
           "bert.embeddings.token_type_embeddings.weight": (c.type_vocab_size, e),
           "bert.embeddings.position_ids": (1, p),
           **_norm("bert.embeddings.LayerNorm", e), **_linear("bert.embeddings.linear_video", e, video_dim)}
    for i in range(c.num_hidden_layers):
        layer = f"bert.encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            out.update(_linear(f"{layer}.attention.self.{proj}", e, e))
        out.update({**_linear(f"{layer}.attention.output.dense", e, e),
                    **_norm(f"{layer}.attention.output.LayerNorm", e),
                    **_linear(f"{layer}.intermediate.dense", inter, e), **_linear(f"{layer}.output.dense", e, inter),
                    **_norm(f"{layer}.output.LayerNorm", e)})
    out.update({"cls.predictions.bias": (v,), **_linear("cls.predictions.transform.dense", e, e),
                **_norm("cls.predictions.transform.LayerNorm", e), "cls.predictions.decoder.weight": (v, e),
                "cls.predictions.decoder.bias": (v,), "answer_embeddings.weight": (n_ans, e), "answer_bias": (n_ans,)})
    return out


def synthetic_state(lm: str, folder: str, *, video_dim: int, n_ans: int = 1000, seed: int = 0) -> dict:
    """Random values in FrozenBiLM's names and shapes for the tiny LM in ``folder``; tied keys share a tensor
    as in FrozenBiLM's model, answer_bias zeros as its answer_bias ends up."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    shapes = (_deberta_shapes if lm == "deberta" else _bert_shapes)(config, video_dim=video_dim, n_ans=n_ans)
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    base, head = ("deberta", "lm_predictions.lm_head") if lm == "deberta" else ("bert", "cls.predictions")
    state[f"{base}.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    state[f"{head}.decoder.weight"] = state[f"{base}.embeddings.word_embeddings.weight"]
    state[f"{head}.decoder.bias"] = state[f"{head}.bias"]
    state["answer_bias"] = torch.zeros(n_ans)
    return state


def save_frozenbilm(path: Path, state: dict) -> Path:
    """As FrozenBiLM's videoqa.py saves: model, optimizer, epoch and its argparse args."""
    args = argparse.Namespace(model_name="deberta-v2-xlarge", ds_factor_attn=8, ds_factor_ff=8, features_dim=768,
                              combine_datasets=["lsmdc"], load="", lr=5e-5)
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3, "args": args}, path)
    return path


def _our_name(key: str, lm: str) -> str:
    """The docstring's table: linear_video to the top, everything else under lm."""
    video = f"{lm}.embeddings.linear_video."
    return "linear_video." + key[len(video):] if key.startswith(video) else "lm." + key


def _pieces(model, table, answers=ANSWERS):
    return torch.stack([table[model.tokenizer(a, add_special_tokens=False)["input_ids"]].mean(0) for a in answers])


# ----------------------------------------------------------------------------------------------- converter

@pytest.mark.parametrize("lm", ["deberta", "bert"])
def test_frozenbilm_weights_land_at_their_names_and_change_the_scores(lms, lm, tmp_path):
    from moviefib.models.frozenbilm_checkpoint import init_from_file

    state = synthetic_state(lm, lms[lm], video_dim=DIMS["2d"])
    path = save_frozenbilm(tmp_path / "frozenbilm.pth", state)
    fresh = _build("bilm_2d", lms[lm]).eval()
    model = _build("bilm_2d", lms[lm]).eval()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    record = init_from_file(model, str(path), answers=ANSWERS, words=[])
    ours = model.state_dict()
    loaded = {k: _our_name(k, lm) for k in state if k not in NOT_LOADED[lm]}
    for theirs, name in loaded.items():
        assert torch.equal(ours[name], state[theirs].float()), (theirs, name)
    assert record["keys_loaded"] == sorted(loaded.values()) and set(record["ignored"]) == NOT_LOADED[lm]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and record["kind"] == "frozenbilm"
    # The answers' rows: recomputed from the loaded word embeddings and head bias.
    base, head = ("deberta", "lm_predictions.lm_head") if lm == "deberta" else ("bert", "cls.predictions")
    word_table = state[f"{base}.embeddings.word_embeddings.weight"]
    torch.testing.assert_close(model.answer_embeddings.weight, _pieces(model, word_table), atol=1e-6, rtol=0)
    torch.testing.assert_close(model.answer_bias, _pieces(model, state[f"{head}.bias"]), atol=1e-6, rtol=0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    ups = [p for n, p in model.named_parameters() if n.endswith(".adapter.up.weight")]
    if lm == "deberta":  # loaded, non-zero
        assert record["adapters"] == "loaded" and all(p.abs().sum() > 0 for p in ups)
    else:  # FrozenBiLM's BERT has none: ours stay the identity
        assert record["adapters"] == "identity (none in the file)" and all(not p.any() for p in ups)
    batch = _batch(model, _samples(("2d",)))
    with torch.no_grad():
        assert (model(batch) - fresh(batch)).abs().max() > 1e-3


def test_a_classifier_model_takes_the_encoder_and_leaves_the_head(lms):
    state = synthetic_state("bert", lms["bert"], video_dim=DIMS["2d"])
    model = _build("bilm_2d", lms["bert"], answer_head="classifier")
    conv = convert_state_dict(state, model.state_dict(), base="bert", mlm=False)
    assert torch.equal(conv.state["lm.embeddings.word_embeddings.weight"],
                       state["bert.embeddings.word_embeddings.weight"])
    assert {k for k in conv.ignored if k.startswith("cls.")} == {k for k in state if k.startswith("cls.")}
    assert "classifier.weight" in conv.kept


@pytest.mark.parametrize("case, match", [
    ("other_lm", r"^key bert\.embeddings\.LayerNorm\.bias is not a weight of this model \(FrozenBiLM's deberta "
                 r"layout expected\)$"),
    ("shape", r"^key deberta\.embeddings\.linear_video\.weight has shape \(32, 768\), this model's "
              r"linear_video\.weight is \(32, 6\)$"),
    ("no_video", r"^lacks linear_video\.weight \(FrozenBiLM's <base>\.embeddings\.linear_video\)"),
    ("some_adapters", r"^holds 15 of the model's 16 adapter weights but not lm\.deberta\.encoder\.layer\.0\."
                      r"attention\.output\.adapter\.down\.bias$"),
    ("tied", r"^lm\.deberta\.embeddings\.LayerNorm\.weight"),
])
def test_a_state_dict_that_does_not_fit_is_refused_naming_the_key(lms, case, match):
    model = _build("bilm_2d", lms["deberta"])
    state = synthetic_state("deberta", lms["deberta"], video_dim=DIMS["2d"])
    if case == "other_lm":
        state = synthetic_state("bert", lms["bert"], video_dim=DIMS["2d"])
    elif case == "shape":
        state.update(synthetic_state("deberta", lms["deberta"], video_dim=768))
    elif case == "no_video":
        del state["deberta.embeddings.linear_video.weight"], state["deberta.embeddings.linear_video.bias"]
    elif case == "some_adapters":
        del state["deberta.encoder.layer.0.attention.output.adapter.down.bias"]
    if case == "tied":  # a weight of the model appears twice in its state dict: the file must agree
        model.lm.deberta.embeddings.LayerNorm.weight = model.lm.deberta.encoder.LayerNorm.weight
    with pytest.raises(ConversionError, match=match):
        convert_state_dict(state, model.state_dict(), base="deberta", mlm=True)


# ----------------------------------------------------------------------------------------------- moviefib train

RIGGED = "blue"  # the answer a rigged head bias makes the loaded model give to every question
TOY_DIM = 8  # the toy 2D store's feature size


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("toy"))


def _train_args(lms, toy: Path, out: Path, *sets: str, recipe: str = "bilm_2d") -> list[str]:
    lm = [f"model.lm={json.dumps(lms['bert'])}"] if recipe.startswith("bilm") else ["model.emb_dim=8", "model.hidden=8"]
    values = [*lm, *TOY_FEATURES, "train.batch_size=16", "train.eval_batch_size=64", "train.threads=1",
              "train.device=cpu", "train.epochs=0", *sets]
    return ["train", recipe, "--dataset", str(toy / "dataset"), "--features-dir", str(toy / "features"), "--out",
            str(out), "--no-progress", *[a for kv in values for a in ("--set", kv)]]


def _init(path: Path) -> str:
    return f"train.init_from={json.dumps(str(path))}"


def rigged_bert_file(lms, path: Path) -> tuple[Path, dict]:
    """A FrozenBiLM BERT file whose head bias makes RIGGED win at every mask."""
    from transformers import AutoTokenizer

    state = synthetic_state("bert", lms["bert"], video_dim=TOY_DIM)
    (piece,) = AutoTokenizer.from_pretrained(lms["bert"])(RIGGED, add_special_tokens=False)["input_ids"]
    state["cls.predictions.bias"][piece] = 1e4  # decoder.bias is the same tensor
    return save_frozenbilm(path, state), state


@pytest.fixture(scope="module")
def zero_shot(lms, toy, tmp_path_factory):
    """A zero-shot bilm_2d run from a rigged FrozenBiLM file: (run folder, init file, its state)."""
    root = tmp_path_factory.mktemp("zero_shot")
    init, state = rigged_bert_file(lms, root / "frozenbilm.pth")
    assert cli_main(_train_args(lms, toy, root / "run", _init(init))) == 0
    return root / "run", init, state


def test_zero_shot_from_frozenbilm_then_predict_without_the_file(zero_shot, toy, tmp_path, capsys):
    run, init, state = zero_shot
    metrics = json.loads((run / "metrics.json").read_text())
    record = metrics["init"]
    assert record["path"] == str(init) and record["sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()
    assert record["kind"] == "frozenbilm" and "linear_video.weight" in record["keys_loaded"]
    assert metrics["config"]["train"]["init_from"] == str(init) and metrics["history"] == []
    model, _ = load_checkpoint(run / "best.pt")
    ours = model.state_dict()
    assert all(torch.equal(ours[_our_name(k, "bert")], v) for k, v in state.items() if k not in NOT_LOADED["bert"])
    answers = predict(run / "best.pt", toy / "dataset", "val", device="cpu")
    assert set(answers.values()) == {RIGGED}  # the loaded head, through the recomputed answer biases
    init.unlink()  # the run's best.pt holds every weight: a rebuild never reads the init file
    out = tmp_path / "val.tsv"
    assert cli_main(["predict", str(run / "best.pt"), str(toy / "dataset"), "--split", "val", "--out", str(out),
                     "--device", "cpu", "--no-progress"]) == 0
    rows = out.read_text().splitlines()[1:]
    assert dict(r.split("\t") for r in rows) == answers


def test_a_moviefib_best_pt_starts_a_run_of_the_same_model_and_data(zero_shot, lms, toy, tmp_path, capsys):
    run, _, _ = zero_shot
    best = run / "best.pt"
    assert cli_main(_train_args(lms, toy, tmp_path / "again", _init(best))) == 0
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert metrics["init"]["kind"] == "moviefib" and metrics["init"]["sha256"] == hashlib.sha256(
        best.read_bytes()).hexdigest()
    first = load_checkpoint(best)[0].state_dict()
    second = load_checkpoint(tmp_path / "again" / "best.pt")[0].state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert cli_main(_train_args(lms, toy, tmp_path / "other", _init(best), "data.top_k=3")) == 3
    assert "its vocabularies differ from this config's data (train.init_from)" in capsys.readouterr().err
    assert cli_main(_train_args(lms, toy, tmp_path / "text", _init(best), recipe="bilm_text")) == 3
    assert "a bilm_2d checkpoint; this recipe trains bilm_text (train.init_from)" in capsys.readouterr().err


def test_fine_tuning_from_frozenbilm_resumes_without_the_file(lms, toy, tmp_path):
    init, _ = rigged_bert_file(lms, tmp_path / "frozenbilm.pth")
    sets = [_init(init), "train.max_batches=1", "train.epochs=1", "train.warmup_epochs=0"]
    assert cli_main(_train_args(lms, toy, tmp_path / "run", *sets)) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["init"]["kind"] == "frozenbilm"
    init.unlink()  # a resumed run has its own weights
    assert cli_main([*_train_args(lms, toy, tmp_path / "run", *sets, "train.epochs=2"), "--resume",
                     str(tmp_path / "run" / "last.pt")]) == 0
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]) == 2


def _bad_file(case: str, lms, path: Path) -> Path:
    import datetime

    if case == "other_lm":
        return save_frozenbilm(path, synthetic_state("deberta", lms["deberta"], video_dim=TOY_DIM))
    if case in ("shape", "text_only"):
        return save_frozenbilm(path, synthetic_state("bert", lms["bert"], video_dim=768 if case == "shape" else 8))
    if case == "not_torch":
        path.write_text("deberta.embeddings.word_embeddings.weight\t0.1\n")
    elif case == "no_model":
        torch.save([torch.zeros(2)], path)
    elif case == "foreign_pickle":
        torch.save({"model": {}, "saved": datetime.datetime(2022, 6, 1)}, path)
    return path  # "missing": never written


@pytest.mark.parametrize("case, message", [
    ("other_lm", r"frozenbilm\.pth: key deberta\.embeddings\.LayerNorm\.bias is not a weight of this model "
                 r"\(FrozenBiLM's bert layout expected\) \(train\.init_from, a FrozenBiLM checkpoint\)"),
    ("shape", r"frozenbilm\.pth: key bert\.embeddings\.linear_video\.weight has shape \(32, 768\), this model's "
              r"linear_video\.weight is \(32, 8\)"),
    ("not_torch", r"frozenbilm\.pth: not a readable checkpoint \(torn, or not written by torch\.save: .*\) "
                  r"\(train\.init_from\)"),
    ("no_model", r"frozenbilm\.pth: neither FrozenBiLM's checkpoint \(a dict with a 'model' state dict\) nor a "
                 r"moviefib best\.pt \(train\.init_from\)"),
    ("foreign_pickle", r"frozenbilm\.pth: not a checkpoint train\.init_from reads \(it pickles datetime\.datetime\)"),
    ("missing", r"frozenbilm\.pth: no such file \(train\.init_from\)"),
    ("text_only", r"frozenbilm\.pth: a FrozenBiLM checkpoint initialises a bilm model, not text_only "
                  r"\(train\.init_from\)"),
])
def test_a_bad_init_file_is_one_line_through_moviefib_train(lms, toy, tmp_path, capsys, case, message):
    import re

    path = _bad_file(case, lms, tmp_path / "frozenbilm.pth")
    recipe = "text_only" if case == "text_only" else "bilm_2d"
    assert cli_main(_train_args(lms, toy, tmp_path / "run", _init(path), recipe=recipe)) == 3
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("moviefib train: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "run" / "best.pt").exists()
