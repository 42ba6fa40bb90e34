"""The training data of ``components.train_model.train``: the feature splits read from
``engineer_features``' folder, the token ids of each file's window, the class weights and the
weighted loss, the deterministic epoch order (:class:`EpochDataset`), dynamic padding
(:class:`PadToLongest`) and accuracy per text over its windows (:func:`text_accuracy`).

Why each is ours and not Trainer's: ``components.train_model``'s module docstring.
"""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aicrush.text_window import DEFAULT_WINDOW, mean_by_text, random_crop, window_texts

SPLITS = ("train", "val", "test")
TEXT_COLUMN = "text"
LABEL_COLUMN = "language"


def load_splits(
    features_dir: Path, splits: Sequence[str] = ("train", "val")
) -> dict[str, pd.DataFrame]:
    """Read the named splits of an ``engineer_features`` folder, checking the text/label columns."""
    features_dir = Path(features_dir)
    out: dict[str, pd.DataFrame] = {}
    for split in splits:
        path = features_dir / f"{split}.parquet"
        if not path.is_file():
            present = (
                sorted(p.name for p in features_dir.glob("*.parquet"))
                if features_dir.is_dir()
                else []
            )
            raise FileNotFoundError(
                f"{split}.parquet is missing from {features_dir} (found: {', '.join(present) or 'nothing'}); "
                "point features_dir at the output of engineer_features"
            )
        frame = pd.read_parquet(path)
        missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{path} lacks column(s) {', '.join(missing)}; engineer_features writes them"
            )
        out[split] = frame.reset_index(drop=True)
    if "train" in out and out["train"].empty:
        raise ValueError(f"{features_dir}/train.parquet has no rows; nothing to train on")
    return out


def labels_of(train: pd.DataFrame) -> list[str]:
    labels = sorted(str(x) for x in train[LABEL_COLUMN].unique())
    if len(labels) < 2:
        raise ValueError(
            f"the training split has {len(labels)} language(s) ({labels}); a classifier needs at least 2"
        )
    return labels


def data_sha256(frame: pd.DataFrame) -> str:
    """sha256 of a split's texts and labels in row order: a checkpoint of a run on other data with
    the same number of files (a refreshed corpus under per-language caps) is not resumable."""
    digest = hashlib.sha256()
    texts, labels = frame[TEXT_COLUMN].astype(str), frame[LABEL_COLUMN].astype(str)
    for text, label in zip(texts, labels, strict=True):
        for part in (text, label):
            raw = part.encode("utf-8", "surrogatepass")
            digest.update(len(raw).to_bytes(8, "little") + raw)
    return digest.hexdigest()


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> torch.Tensor:
    """Per-class loss weights: ``balanced`` is ``n / (n_classes x count)`` (scikit-learn's
    definition; a class absent from ``y`` gets 0), ``none`` is all ones."""
    if mode == "none":
        return torch.ones(n_classes, dtype=torch.float32)
    if mode != "balanced":
        raise ValueError(f"unknown class_weighting {mode!r}; expected 'none' or 'balanced'")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float64)
    weights[present] = len(y) / (int(present.sum()) * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def weighted_loss(weight: torch.Tensor) -> Callable[..., torch.Tensor]:
    """Trainer's ``compute_loss_func``: class-weighted cross-entropy.

    ``outputs.logits`` [batch, classes], ``labels`` [batch] (int64; -100 is ignored). With ``num_items_in_batch``
    (Trainer passes the number of labels of the whole accumulated batch, over all processes) the
    loss is ``sum(weight[y] * ce) / num_items_in_batch``, so gradient accumulation and DDP give
    the gradient of one large batch; with balanced weights the mean weight over the training set
    is 1, so this estimates the same balanced risk as a weighted mean. Without it: the weighted mean.
    """

    def loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"].float()
        w = weight.to(logits.device)
        if num_items_in_batch is None:
            return torch.nn.functional.cross_entropy(logits, labels, weight=w)
        total = torch.nn.functional.cross_entropy(logits, labels, weight=w, reduction="sum")
        if torch.is_tensor(num_items_in_batch):
            return total / num_items_in_batch.clamp(min=1)
        return total / max(num_items_in_batch, 1)

    return loss


def tokenize(
    tokenizer: Any, texts: Sequence[str], max_length: int, window: str = DEFAULT_WINDOW
) -> list[list[int]]:
    """Token ids per text: the text window the model reads (``aicrush.text_window``), truncated
    to ``max_length`` (no padding: batches pad dynamically)."""
    # Characters beyond ~16 per token can never survive truncation; cutting them first saves time.
    limit = max_length * 16
    enc = tokenizer(
        [t[:limit] for t in window_texts(texts, max_length, window)],
        truncation=True,
        max_length=max_length,
        padding=False,
    )
    return list(enc["input_ids"])


def seed_of(*parts: int) -> int:
    """One 63-bit seed from several integers (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([abs(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class EpochDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The training rows of one epoch, length-grouped, deterministic in (seed, epoch).

    ``ids``: token ids per file (for ``crop``: the whole span, untruncated; else already cut to
    ``max_length``); ``labels``: class index per file. Item ``i`` of epoch ``e`` is row
    ``order[i]`` with ``order`` from transformers' ``get_length_grouped_indices`` (shuffle, sort by
    length within mega-batches of ``group_size`` x 50 rows: little padding per batch; ``train``
    passes the rows of one optimizer step over all processes, so 1 process x batch 16 and 2
    processes x batch 8 read the same rows in the same steps) with a
    generator seeded by (seed, e). With ``crop`` the row is one ``max_length``-token window at a
    random place of its file (``aicrush.text_window.random_crop``) drawn from (seed, e, row): a
    new view every epoch, the same one in a resumed run. Trainer (accelerate's DataLoader) calls
    :meth:`set_epoch` before each epoch and reads the items in order
    (``train_sampling_strategy="sequential"``; with DDP, process r takes batches r, r + W, ...).
    """

    def __init__(
        self,
        ids: Sequence[Sequence[int]],
        labels: np.ndarray,
        *,
        max_length: int,
        seed: int,
        group_size: int,
        crop: bool,
    ):
        self.ids = [list(x) for x in ids]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.max_length, self.seed, self.group_size, self.crop = max_length, seed, group_size, crop
        self.lengths = [min(len(x), max_length) for x in self.ids]
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s order (called by Trainer's data loader)."""
        from transformers.trainer_pt_utils import get_length_grouped_indices

        self.epoch = int(epoch)
        generator = torch.Generator().manual_seed(seed_of(self.seed, self.epoch))
        self.order = get_length_grouped_indices(self.lengths, self.group_size, generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.order[i])
        ids = self.ids[row]
        if self.crop:
            rng = np.random.default_rng([abs(self.seed), self.epoch, row])
            ids = random_crop(ids, self.max_length, rng)
        return {"input_ids": ids, "labels": int(self.labels[row])}


@dataclass(frozen=True)
class PadToLongest:
    """Trainer's ``data_collator``: rows ``{"input_ids": list[int], "labels": int}`` to a batch
    ``input_ids`` / ``attention_mask`` [rows, longest row] (int64; right padding with
    ``pad_token_id``, mask 1 on tokens) and ``labels`` [rows] (int64), what
    ``DataCollatorWithPadding`` returns, by ``torch.nn.utils.rnn.pad_sequence``
    (``components.train_model``'s docstring: 7x faster here)."""

    pad_token_id: int

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [torch.as_tensor(row["input_ids"], dtype=torch.long) for row in rows]
        input_ids = torch.nn.utils.rnn.pad_sequence(
            ids, batch_first=True, padding_value=self.pad_token_id
        )
        lengths = torch.tensor([len(x) for x in ids])
        mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
        labels = torch.tensor([int(row["labels"]) for row in rows], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def text_accuracy(row_logits: np.ndarray, owner: Sequence[int], y: np.ndarray) -> float:
    """Accuracy per text: softmax of ``row_logits`` [rows, classes], averaged over the rows of
    each text (``owner``: row -> text index) before the argmax; ``y`` [texts] (-1: a label the
    model does not know, always wrong)."""
    if len(y) == 0:
        return float("nan")
    logits = torch.from_numpy(np.asarray(row_logits, dtype=np.float32))
    probs = torch.softmax(logits, dim=-1).numpy()
    return float((mean_by_text(probs, owner, len(y)).argmax(-1) == y).mean())
