"""Datasets over decoded uint8 tensors, and the LightningDataModule that serves them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ferlab.data.cache import cache_file, decode_split
from ferlab.data.classes import ClassMapping
from ferlab.data.soft_labels import mapped_votes
from ferlab.data.sources import DatasetSource
from ferlab.data.transforms import train_transform
from ferlab.errors import DataError
from ferlab.preprocessing import Preprocessing, eval_transform
from ferlab.seeding import derived_seed
from ferlab.signals import ignore_stop_signals


class TensorImageDataset(Dataset):
    """Samples ``(transform(images[i]), labels[i])`` from a uint8 image tensor.

    With ``va`` (float (N, 2), NaN where missing) a sample is ``(image, label, va, va_mask)``:
    valence and arousal with 0 where missing, and a bool (2,) mask of the values present.
    With ``targets`` (float (N, C), each row a distribution over the classes) a sample is
    ``(image, label, target)``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor],
        va: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> None:
        if va is not None and targets is not None:
            raise ValueError("a sample carries valence/arousal or soft targets, not both")
        self.images = images
        self.labels = labels
        self.transform = transform
        self.va_mask = None if va is None else ~torch.isnan(va)
        self.va = None if va is None else torch.nan_to_num(va, nan=0.0)
        self.targets = targets

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image, label = self.transform(self.images[index]), self.labels[index]
        if self.targets is not None:
            return image, label, self.targets[index]
        if self.va is None or self.va_mask is None:
            return image, label
        return image, label, self.va[index], self.va_mask[index]


@dataclass
class LabelledImages:
    """A split ready for training: uint8 images, target class ids and the source row of each;
    ``va``: float32 (N, 2) valence and arousal, NaN where missing, None if the data has none;
    ``votes``: float32 (N, C) crowd votes over the target classes (the label is their majority),
    None without a labels file."""

    images: torch.Tensor
    labels: torch.Tensor
    rows: torch.Tensor
    va: torch.Tensor | None = None
    votes: torch.Tensor | None = None

    def class_counts(self, num_classes: int) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=num_classes)

    def distributions(self) -> torch.Tensor | None:
        """The votes normalised to sum to 1 per sample (None without votes)."""
        if self.votes is None:
            return None
        return self.votes / self.votes.sum(dim=1, keepdim=True)

    def class_prior(self, num_classes: int) -> torch.Tensor:
        """The share of each class: the mean vote distribution, else the label frequencies."""
        dist = self.distributions()
        if dist is not None:
            return dist.mean(dim=0)
        counts = self.class_counts(num_classes).double()
        return (counts / counts.sum()).float()

    def subset(self, indices: torch.Tensor) -> LabelledImages:
        """The samples at ``indices``, in that order."""

        def pick(values: torch.Tensor | None) -> torch.Tensor | None:
            return None if values is None else values[indices]

        return LabelledImages(
            self.images[indices],
            self.labels[indices],
            self.rows[indices],
            pick(self.va),
            pick(self.votes),
        )


def limit_per_class(labels: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """Indices of at most ``limit`` samples per class, chosen at random with ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    array = labels.numpy()
    for label in np.unique(array):
        members = np.flatnonzero(array == label)
        keep.append(rng.permutation(members)[:limit])
    return torch.from_numpy(np.sort(np.concatenate(keep)))


def stratified_limit(labels: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``limit`` samples (all if fewer), drawn per class in proportion to its
    share (largest remainders round up; every class keeps one where ``limit`` allows)."""
    array = labels.numpy()
    if limit >= len(array):
        return torch.arange(len(array))
    classes, counts = np.unique(array, return_counts=True)
    quota = counts * limit / counts.sum()
    take = np.floor(quota).astype(int)
    if limit >= len(classes):
        take = np.maximum(take, 1)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    for k in order[: max(0, limit - take.sum())]:
        take[k] += 1
    while take.sum() > limit:
        take[np.argmax(take)] -= 1
    rng = np.random.default_rng(seed)
    keep = [
        rng.permutation(np.flatnonzero(array == label))[:n]
        for label, n in zip(classes, take, strict=True)
    ]
    return torch.from_numpy(np.sort(np.concatenate(keep)))


def _va_column(values: np.ndarray | None, rows: list[int]) -> np.ndarray:
    return np.full(len(rows), np.nan, np.float32) if values is None else values[rows]


def load_labelled_split(
    source: DatasetSource,
    split: str,
    mapping: ClassMapping,
    *,
    image_size: int,
    color: str = "gray",
    on_bad_file: str = "skip",
    cache_dir: Path | None = None,
    per_class: int | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> LabelledImages:
    """Decode ``split`` (cached), map its class names to target ids and drop unmapped classes;
    files that fail to decode join ``source.skipped``.

    ``per_class`` keeps at most that many samples per class, then ``limit`` a stratified sample
    of that many in all; both seeded.
    """
    if split not in source.splits:
        raise DataError(f"{source.root}: no '{split}' split (have {', '.join(source.splits)})")
    table = source.splits[split]
    decoded = decode_split(
        table, image_size=image_size, color=color, on_bad_file=on_bad_file, cache_dir=cache_dir
    )
    source.skipped.extend(skip for skip in decoded.skipped if skip not in source.skipped)
    decoded_rows = decoded.rows.tolist()
    votes = None
    if table.votes is not None and source.vote_columns is not None:
        targets, majority = mapped_votes(table.votes, source.vote_columns, mapping)
        ids = [int(majority[row]) if majority[row] >= 0 else None for row in decoded_rows]
        votes = torch.from_numpy(targets.astype(np.float32))
    else:
        ids = [mapping.label_of(table.labels[row]) for row in decoded_rows]
    kept = torch.tensor([i for i, label in enumerate(ids) if label is not None], dtype=torch.long)
    if len(kept) == 0:
        raise DataError(
            f"{source.root}: split '{split}' has no images of {', '.join(mapping.names)}"
        )
    labels = torch.tensor([ids[i] for i in kept.tolist()], dtype=torch.long)
    rows = decoded.rows[kept]
    va = None
    if table.valence is not None or table.arousal is not None:
        picked = rows.tolist()
        columns = [_va_column(table.valence, picked), _va_column(table.arousal, picked)]
        va = torch.from_numpy(np.stack(columns, axis=1))
    data = LabelledImages(
        decoded.images[kept], labels, rows, va, None if votes is None else votes[rows]
    )
    if per_class is not None:
        data = data.subset(limit_per_class(data.labels, per_class, seed))
    if limit is not None:
        data = data.subset(stratified_limit(data.labels, limit, seed))
    counts = torch.bincount(data.labels, minlength=len(mapping.names))
    unseen = [name for name, count in zip(mapping.names, counts.tolist(), strict=True) if not count]
    if split == "train" and unseen:
        warnings.warn(
            f"{source.root}: no training image of {', '.join(unseen)}"
            + (" left by --limit/--limit-per-class" if limit or per_class else "")
            + "; the model cannot learn to answer it",
            stacklevel=2,
        )
    return data


class EpochSampler(Sampler[tuple[int, int]]):
    """A shuffled, or class-balanced, order that depends only on the seed and the epoch; it yields
    ``(epoch, index)``, so that ``SeededSamples`` can seed each sample's augmentation.

    Lightning calls ``set_epoch`` before each epoch (also through its DDP wrapper), but data loader
    workers draw the first epoch of a session when the loader is first iterated, before that call:
    ``epoch`` starts at the first epoch the session runs.
    """

    def __init__(
        self, size: int, seed: int, weights: torch.Tensor | None = None, epoch: int = 0
    ) -> None:
        self.size = size
        self.seed = seed
        self.weights = weights
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(
                self.weights, self.size, replacement=True, generator=generator
            )
        return iter([(epoch, index) for index in order.tolist()])


class SeededSamples(Dataset):
    """Serves ``dataset[index]`` for an ``(epoch, index)`` key under a torch seed derived from
    (seed, epoch, index): augmentation depends on the sample's place in the run, not on which
    worker draws it or what that worker drew before. The caller's random state is left as it was."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(self.seed, epoch, index))
            return self.dataset[index]


def default_num_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class FERDataModule(L.LightningDataModule):
    """Train/val loaders over the decoded cache, with augmentation and optional class balancing."""

    def __init__(
        self,
        source: DatasetSource,
        mapping: ClassMapping,
        prep: Preprocessing,
        *,
        image_size: int,
        color: str = "gray",
        augment: str = "standard",
        batch_size: int = 64,
        balance: str = "none",
        per_class: int | None = None,
        limit: int | None = None,
        with_va: bool = False,
        label_mode: str = "majority",
        on_bad_file: str = "skip",
        num_workers: int | None = None,
        cache_dir: Path | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.label_mode = label_mode
        self.source = source
        self.mapping = mapping
        self.prep = prep
        self.image_size = image_size
        self.color = color
        self.augment = augment
        self.batch_size = batch_size
        self.balance = balance
        self.per_class = per_class
        self.limit = limit
        self.with_va = with_va
        self.on_bad_file = on_bad_file
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.cache_dir = cache_dir
        self.seed = seed
        self.first_epoch = 0
        """The first epoch the next ``train_dataloader()`` serves (the resumed one, on resume)."""
        self.splits: dict[str, LabelledImages] = {}

    def _load(self, split: str) -> LabelledImages:
        train = split == "train"
        data = load_labelled_split(
            self.source,
            split,
            self.mapping,
            image_size=self.image_size,
            color=self.color,
            on_bad_file=self.on_bad_file,
            cache_dir=self.cache_dir,
            per_class=self.per_class if train else None,
            limit=self.limit if train else None,
            seed=self.seed,
        )
        if self.with_va and (data.va is None or torch.isnan(data.va).all()):
            raise DataError(
                f"{self.source.root}: split '{split}' has no valence/arousal values, which a "
                "multi-task model needs (AffectNet layout, or a manifest with valence,arousal)"
            )
        return data

    def cached_splits(self) -> dict[str, bool]:
        """Whether the train and val splits' decoded pixels are in the cache already."""
        return {
            split: cache_file(
                self.source.splits[split], self.image_size, self.color, self.cache_dir
            ).is_file()
            for split in ("train", "val")
            if split in self.source.splits
        }

    def prepare_data(self) -> None:
        for split in ("train", "val"):
            self._load(split)

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            if split not in self.splits:
                self.splits[split] = self._load(split)

    def class_counts(self) -> torch.Tensor:
        self.setup()
        return self.splits["train"].class_counts(self.mapping.num_classes)

    def _targets(self, split: LabelledImages) -> torch.Tensor | None:
        """The vote distributions a ``distribution`` label mode trains against."""
        return split.distributions() if self.label_mode == "distribution" else None

    def _loader(self, dataset: Dataset, **kwargs: object) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=ignore_stop_signals,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        split = self.splits["train"]
        dataset = TensorImageDataset(
            split.images,
            split.labels,
            train_transform(self.augment, self.prep),
            split.va if self.with_va else None,
            self._targets(split),
        )
        samples = SeededSamples(dataset, self.seed)
        weights = None
        if self.balance == "sampler":
            counts = split.class_counts(self.mapping.num_classes).clamp(min=1).double()
            weights = (1.0 / counts)[split.labels]
        sampler = EpochSampler(len(dataset), self.seed, weights, self.first_epoch)
        return self._loader(samples, sampler=sampler, drop_last=len(dataset) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        split = self.splits["val"]
        va = split.va if self.with_va else None
        dataset = TensorImageDataset(
            split.images, split.labels, eval_transform(self.prep), va, self._targets(split)
        )
        return self._loader(dataset)
