"""Class names: canonical orders of the known data sets and mapping source classes to labels."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferlab.errors import ConfigError

CANONICAL_CLASSES: dict[str, tuple[str, ...]] = {
    # FER2013 CSV emotion codes 0..6.
    "fer2013": ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    # FER+ crowd labels: FER2013's seven, then contempt.
    "ferplus": ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"),
    "affectnet": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"),
    # CK+ folder names.
    "ckplus": ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"),
}

CLASS_SPELLINGS = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
}
"""Other spellings of the FER2013 class names (lower case), as in CK+, AffectNet or FER+."""

# Orders tried by canonical_order, first match wins; CK+ sets may also hold "neutral" (CK+ code 0).
_ORDERS: tuple[tuple[str, ...], ...] = (
    CANONICAL_CLASSES["fer2013"],
    CANONICAL_CLASSES["ferplus"],
    CANONICAL_CLASSES["affectnet"],
    ("neutral", *CANONICAL_CLASSES["ckplus"]),
)


def canonical_order(names: Iterable[str]) -> list[str]:
    """Order distinct class names by the first canonical set that holds them all, else A-Z."""
    unique = set(names)
    for order in _ORDERS:
        if unique <= set(order):
            return [name for name in order if name in unique]
    return sorted(unique)


def _check_known(option: str, names: Iterable[str], available: Sequence[str]) -> None:
    for name in names:
        if name not in available:
            raise ConfigError(
                f"{option}: class '{name}' not in the data; classes: {', '.join(available)}"
            )


@dataclass
class ClassMapping:
    """How the class names found in the data map to label ids."""

    source: list[str]
    """Class names as found in the data."""
    names: list[str]
    """Target class names; the index is the label id."""
    lookup: dict[str, int]
    """Source name -> target id; dropped classes are absent."""

    @classmethod
    def build(
        cls,
        source: Sequence[str],
        keep: Sequence[str] | None = None,
        rename: Mapping[str, str] | None = None,
        merge: Mapping[str, Sequence[str]] | None = None,
    ) -> ClassMapping:
        """Apply `rename` (old -> new), then `merge` (new -> members), then `keep` (targets).

        Names that end up equal become one class. Target order is `keep`'s order when given,
        else canonical_order of the targets.
        """
        source = list(dict.fromkeys(source))
        rename = dict(rename or {})
        _check_known("rename", rename, canonical_order(source))
        _warn_renamed_together(source, rename)
        target = {name: rename.get(name, name) for name in source}

        if merge:
            available = canonical_order(target.values())
            group_of: dict[str, str] = {}
            for group, members in merge.items():
                if not members:
                    raise ConfigError(f"merge: group '{group}' lists no classes")
                _check_known("merge", members, available)
                for member in members:
                    if group_of.get(member) == group:
                        raise ConfigError(f"merge: class '{member}' listed twice in '{group}'")
                    if member in group_of:
                        raise ConfigError(
                            f"merge: class '{member}' is in both '{group_of[member]}' and '{group}'"
                        )
                    group_of[member] = group
            target = {name: group_of.get(t, t) for name, t in target.items()}

        names = canonical_order(target.values())
        if keep is not None:
            _check_known("keep", keep, names)
            duplicates = sorted({name for name in keep if keep.count(name) > 1})
            if duplicates:
                raise ConfigError(f"keep: class listed twice: {', '.join(duplicates)}")
            names = list(keep)
        if len(names) < 2:
            raise ConfigError(
                f"need at least 2 classes, got {len(names)}: {', '.join(names) or 'none'}"
            )
        index = {name: i for i, name in enumerate(names)}
        lookup = {name: index[t] for name, t in target.items() if t in index}
        return cls(source=source, names=names, lookup=lookup)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def label_of(self, source_name: str) -> int | None:
        """Label id of a source class, or None when the class is dropped or unknown."""
        return self.lookup.get(source_name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; inverse of from_dict."""
        return {"source": list(self.source), "names": list(self.names), "lookup": dict(self.lookup)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassMapping:
        """Rebuild a mapping saved by to_dict."""
        try:
            mapping = cls(
                source=[str(name) for name in data["source"]],
                names=[str(name) for name in data["names"]],
                lookup={str(name): int(i) for name, i in data["lookup"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"malformed class mapping: {exc!r}") from None
        bad = {name: i for name, i in mapping.lookup.items() if not 0 <= i < len(mapping.names)}
        if bad:
            raise ConfigError(f"malformed class mapping: label ids out of range: {bad}")
        return mapping


def _warn_renamed_together(source: Sequence[str], rename: Mapping[str, str]) -> None:
    """A warning for each name that ``rename`` gives to a class that keeps it or to more than
    one class: those classes become one, as a merge would make them."""
    for new in dict.fromkeys(rename.values()):
        olds = [old for old, name in rename.items() if name == new and old != new]
        items = ",".join(f"{old}={new}" for old in olds)
        if new in source and rename.get(new, new) == new and olds:
            verb = "is" if len(olds) == 1 else "are"
            warnings.warn(
                f"--rename {items}: {new} already exists, so {' and '.join(olds)} {verb} merged "
                "into it (use --merge to say so)",
                stacklevel=4,
            )
        elif len(olds) > 1:
            warnings.warn(
                f"--rename {items}: {' and '.join(olds)} are merged into {new} (use --merge to "
                "say so)",
                stacklevel=4,
            )


def _split_items(option: str, text: str, sep: str, example: str) -> list[str]:
    items = [item.strip() for item in text.split(sep)]
    if not all(items):
        raise ConfigError(f"{option}: empty item in '{text}'; expected e.g. '{example}'")
    return items


def _parse_pair(option: str, item: str, text: str, example: str) -> tuple[str, str]:
    left, sep, right = (part.strip() for part in item.partition("="))
    if not (sep and left and right) or "=" in right:
        raise ConfigError(f"{option}: bad item '{item}' in '{text}'; expected e.g. '{example}'")
    return left, right


def parse_class_options(
    keep: str | None, rename: str | None, merge: str | None
) -> tuple[list[str] | None, dict[str, str] | None, dict[str, list[str]] | None]:
    """Parse CLI strings for ClassMapping.build; None or blank means not given.

    keep "angry,happy,sad"; rename "anger=angry,sadness=sad";
    merge "negative=angry+disgust+fear;positive=happy".
    """
    keep_list = rename_map = merge_map = None
    if keep and keep.strip():
        keep_list = _split_items("keep", keep, ",", "angry,happy,sad")
    if rename and rename.strip():
        example = "anger=angry,sadness=sad"
        rename_map = {}
        for item in _split_items("rename", rename, ",", example):
            old, new = _parse_pair("rename", item, rename, example)
            if old in rename_map:
                raise ConfigError(f"rename: class '{old}' renamed twice in '{rename}'")
            rename_map[old] = new
    if merge and merge.strip():
        example = "negative=angry+disgust+fear;positive=happy"
        merge_map = {}
        for item in _split_items("merge", merge, ";", example):
            group, members = _parse_pair("merge", item, merge, example)
            if group in merge_map:
                raise ConfigError(f"merge: group '{group}' given twice in '{merge}'")
            merge_map[group] = _split_items("merge", members, "+", example)
    return keep_list, rename_map, merge_map
