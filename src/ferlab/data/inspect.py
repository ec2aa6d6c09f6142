"""Inspect a data set: class balance, image sizes and modes, unreadable files, duplicates.

`inspect_dataset` decodes every image once and returns an `Inspection`; `write_inspection`
saves inspect.json, inspect.md and the plots; `format_summary` is the printed digest.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ferlab.data.duplicates import MAX_THRESHOLD, duplicate_pairs, phash, pixel_digest
from ferlab.data.sources import DatasetSource, load_dataset
from ferlab.data.tables import unreadable_reason
from ferlab.errors import ConfigError
from ferlab.outputs import write_atomic
from ferlab.progress import track

SAMPLES_PER_CLASS = 16
MAX_IMAGE_PIXELS = 64_000_000


@dataclass
class Inspection:
    """What `inspect_dataset` found: the JSON-safe report plus sample images for the plots."""

    report: dict[str, Any]
    samples: dict[str, list[np.ndarray]] = field(default_factory=dict)
    """Up to SAMPLES_PER_CLASS decoded images per class (uint8 gray or RGB)."""


@dataclass
class _Scan:
    """Per-image results of decoding, over all splits in order."""

    ids: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)
    sizes: Counter[str] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    unreadable: list[dict[str, str]] = field(default_factory=list)


def _canonical_pixels(image: Image.Image) -> np.ndarray:
    """Pixels as gray (also for RGB with equal channels) or RGB, so modes compare fairly."""
    if image.mode == "L":
        return np.asarray(image)
    rgb = np.asarray(image.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]
    return rgb


def _sample_rows(source: DatasetSource, seed: int) -> dict[tuple[str, int], str]:
    """(split, row) -> class of up to SAMPLES_PER_CLASS random samples per class."""
    rows = [
        (name, i, label) for name, t in source.splits.items() for i, label in enumerate(t.labels)
    ]
    rng = np.random.default_rng(seed)
    chosen = {}
    for cls in source.classes:
        members = [row for row in rows if row[2] == cls]
        for k in rng.permutation(len(members))[:SAMPLES_PER_CLASS]:
            split, i, label = members[k]
            chosen[(split, i)] = label
    return chosen


def shown_path(file: str, source: DatasetSource) -> str:
    """A file as reported: relative to the root of a folder tree, else as given."""
    path = Path(file)
    if source.kind == "folders" and path.is_relative_to(source.root):
        return path.relative_to(source.root).as_posix()
    return file


def _scan(source: DatasetSource, seed: int) -> tuple[_Scan, dict[str, list[np.ndarray]]]:
    """Decode every sample once: pixel digests, pHashes, stats; keep the sampled images."""
    scan = _Scan()
    chosen = _sample_rows(source, seed)
    samples: dict[str, list[np.ndarray]] = {cls: [] for cls in source.classes}

    def keep(split: str, i: int, label: str, item: str, pixels: np.ndarray) -> None:
        scan.ids.append(item)
        scan.splits.append(split)
        scan.labels.append(label)
        scan.digests.append(pixel_digest(pixels))
        if (split, i) in chosen:
            samples[label].append(pixels)

    for split, table in source.splits.items():
        if table.pixels is not None:
            scan.sizes[f"{table.pixels.shape[2]}x{table.pixels.shape[1]}"] += len(table)
            scan.modes["L"] += len(table)
            scan.formats["csv"] += len(table)
            rows = zip(table.labels, table.pixels, strict=True)
            for i, (label, pixels) in enumerate(track(rows, f"inspect {split}", len(table))):
                keep(split, i, label, f"{split}#{i}", pixels)
                scan.hashes.append(phash(Image.fromarray(pixels)))
            continue
        assert table.paths is not None
        files = zip(table.labels, table.paths, strict=True)
        for i, (label, path) in enumerate(track(files, f"inspect {split}", len(table))):
            item = shown_path(str(path), source)
            try:
                with Image.open(path) as image:
                    if image.width * image.height > MAX_IMAGE_PIXELS:
                        raise ValueError(f"{image.width}x{image.height} pixels is too large")
                    image.load()
                    pixels = _canonical_pixels(image)
                    hash_value = phash(image)
                    size, mode, fmt = f"{image.width}x{image.height}", image.mode, image.format
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                reason = unreadable_reason(exc, path)
                scan.unreadable.append({"file": item, "reason": reason})
                continue
            scan.sizes[size] += 1
            scan.modes[mode] += 1
            scan.formats[(fmt or "unknown").lower()] += 1
            keep(split, i, label, item, pixels)
            scan.hashes.append(hash_value)
    return scan, samples


def imbalance(counts: dict[str, int]) -> dict[str, Any]:
    """Max/min class ratio (None when a class is empty), normalized entropy, majority share."""
    names = list(counts)
    values = np.array([counts[name] for name in names], dtype=np.float64)
    total = values.sum()
    shares = values / total if total else values
    nonzero = shares[shares > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    return {
        "max_min_ratio": round(values.max() / values.min(), 2) if values.min() > 0 else None,
        "balance": round(entropy / math.log(len(names)), 4) if len(names) > 1 else 1.0,
        "majority_class": names[int(values.argmax())],
        "majority_share": round(float(shares.max()), 4),
        "minority_class": names[int(values.argmin())],
        "minority_share": round(float(shares.min()), 4),
    }


_PAIR_FIELDS = ("exact", "exact_label_conflicts", "near", "near_label_conflicts")


def _pair_key(first: str, second: str, order: list[str]) -> str:
    """ "train-test" for either order of the two splits."""
    a, b = sorted((first, second), key=order.index)
    return f"{a}-{b}"


def _duplicates(scan: _Scan, split_names: list[str], threshold: int) -> dict[str, Any]:
    hashes = np.array(scan.hashes, dtype=np.uint64)
    exact_groups, near = duplicate_pairs(scan.digests, hashes, threshold)
    pairs = {
        f"{a}-{b}": dict.fromkeys(_PAIR_FIELDS, 0)
        for k, a in enumerate(split_names)
        for b in split_names[k:]
    }
    leaked: dict[str, dict[str, set[int]]] = {
        name: {"exact": set(), "near": set()} for name in split_names
    }

    def count(kind: str, i: int, j: int) -> None:
        entry = pairs[_pair_key(scan.splits[i], scan.splits[j], split_names)]
        entry[kind] += 1
        entry[f"{kind}_label_conflicts"] += int(scan.labels[i] != scan.labels[j])
        if scan.splits[i] != scan.splits[j]:
            leaked[scan.splits[i]][kind].add(i)
            leaked[scan.splits[j]][kind].add(j)

    for group in exact_groups:
        for k, i in enumerate(group):
            for j in group[k + 1 :]:
                count("exact", i, j)
    for i, j, _ in near:
        count("near", int(i), int(j))

    def item(i: int) -> dict[str, str]:
        return {"id": scan.ids[i], "split": scan.splits[i], "label": scan.labels[i]}

    return {
        "near_threshold_bits": threshold,
        "exact_groups": len(exact_groups),
        "exact_images": sum(len(group) for group in exact_groups),
        "near_pairs": len(near),
        "by_split_pair": pairs,
        "in_other_splits": {
            name: {kind: len(found) for kind, found in kinds.items()}
            for name, kinds in leaked.items()
        },
        "exact_group_list": [[item(i) for i in group] for group in exact_groups],
        "near_pair_list": [
            {"a": item(int(i)), "b": item(int(j)), "distance": int(d)} for i, j, d in near
        ],
    }


def inspect_dataset(path: str | Path, *, near_threshold: int = 4, seed: int = 0) -> Inspection:
    """Decode every image of a data set once and report on its classes, images and duplicates."""
    if not 0 <= near_threshold <= MAX_THRESHOLD:
        raise ConfigError(f"near threshold must be 0..{MAX_THRESHOLD} bits, got {near_threshold}")
    source = load_dataset(path, seed=seed)
    scan, samples = _scan(source, seed)
    split_names = list(source.splits)
    counts = {
        name: {c: t.class_counts().get(c, 0) for c in source.classes}
        for name, t in source.splits.items()
    }
    counts["all"] = {c: sum(counts[name][c] for name in split_names) for c in source.classes}
    report = {
        "dataset": str(source.root),
        "kind": source.kind,
        "classes": source.classes,
        "split_sizes": {name: len(table) for name, table in source.splits.items()},
        "drawn_splits": {"splits": list(source.made_splits), "seed": seed},
        "excluded": dict(source.excluded),
        "class_counts": counts,
        "imbalance": {name: imbalance(c) for name, c in counts.items()},
        "images": {
            "decoded": len(scan.ids),
            "sizes": dict(scan.sizes.most_common()),
            "modes": dict(scan.modes.most_common()),
            "formats": dict(scan.formats.most_common()),
        },
        "unreadable": [{"file": shown_path(f, source), "reason": r} for f, r in source.skipped]
        + scan.unreadable,
        "duplicates": _duplicates(scan, split_names, near_threshold),
    }
    return Inspection(report, samples)


def _pair_rows(report: dict[str, Any]) -> list[list[str]]:
    pairs = report["duplicates"]["by_split_pair"]
    return [[key, *(str(entry[f]) for f in _PAIR_FIELDS)] for key, entry in pairs.items()]


_PAIR_HEADER = ["splits", "exact pairs", "diff. labels", "near pairs", "diff. labels"]


def _count_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    counts = report["class_counts"]
    header = ["class", *counts]
    rows = [[name, *(str(counts[s][name]) for s in counts)] for name in report["classes"]]
    rows.append(["total", *(str(sum(counts[s].values())) for s in counts)])
    return header, rows


def _imbalance_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for split, entry in report["imbalance"].items():
        ratio = entry["max_min_ratio"]
        rows.append(
            [
                split,
                "inf (empty class)" if ratio is None else f"{ratio:.2f}",
                f"{entry['balance']:.3f}",
                f"{entry['majority_class']} {entry['majority_share']:.1%}",
                f"{entry['minority_class']} {entry['minority_share']:.1%}",
            ]
        )
    return rows


_IMBALANCE_HEADER = ["split", "max/min", "balance", "majority", "minority"]


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if k == 0 else cell.rjust(width)
            for k, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _counter_text(counter: dict[str, int]) -> str:
    return ", ".join(f"{key} ({value})" for key, value in counter.items()) or "none"


def _leak_text(report: dict[str, Any]) -> str:
    return "; ".join(
        f"{split}: {entry['exact']} exact, {entry['near']} near"
        for split, entry in report["duplicates"]["in_other_splits"].items()
    )


def format_summary(report: dict[str, Any], unreadable_shown: int = 5) -> str:
    """The printed digest: class table, imbalance, image stats, unreadable files, duplicates."""
    images = report["images"]
    duplicates = report["duplicates"]
    lines = [f"{report['dataset']} ({report['kind']}): {len(report['classes'])} classes"]
    drawn = report.get("drawn_splits", {})
    if drawn.get("splits"):
        lines.append(
            f"splits {', '.join(drawn['splits'])}: drawn from the data (seed {drawn['seed']}, "
            "default fractions); training draws them by its --seed and fractions"
        )
    if report.get("excluded"):
        reasons = ", ".join(f"{reason}: {n}" for reason, n in report["excluded"].items())
        lines.append(
            f"excluded by the data set's rules: {sum(report['excluded'].values())} ({reasons})"
        )
    lines.append("")
    lines += _text_table(*_count_rows(report))
    lines += ["", "imbalance (balance = class entropy / log(classes); 1 = even)"]
    lines += _text_table(_IMBALANCE_HEADER, _imbalance_rows(report))
    lines += [
        "",
        f"images decoded: {images['decoded']}",
        f"sizes: {_counter_text(images['sizes'])}",
        f"modes: {_counter_text(images['modes'])}",
        f"formats: {_counter_text(images['formats'])}",
        f"unreadable: {len(report['unreadable'])}",
    ]
    lines += [f"  {e['file']}: {e['reason']}" for e in report["unreadable"][:unreadable_shown]]
    if len(report["unreadable"]) > unreadable_shown:
        lines.append(f"  ... and {len(report['unreadable']) - unreadable_shown} more")
    lines += [
        "",
        f"duplicates: {duplicates['exact_groups']} groups of identical pixels "
        f"({duplicates['exact_images']} images); {duplicates['near_pairs']} near pairs "
        f"(pHash within {duplicates['near_threshold_bits']} bits, pixels differ)",
    ]
    lines += _text_table(_PAIR_HEADER, _pair_rows(report))
    lines.append(f"images with a duplicate in another split: {_leak_text(report)}")
    return "\n".join(lines)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _markdown(report: dict[str, Any], pictures: dict[str, str]) -> str:
    duplicates = report["duplicates"]
    images = report["images"]
    lines = [f"# Data set inspection: {report['dataset']}", "", f"Kind: {report['kind']}.", ""]
    lines += ["## Class distribution", "", *_md_table(*_count_rows(report)), ""]
    lines += ["![class distribution](class_distribution.png)", ""]
    lines += ["## Imbalance", "", "Balance is the class entropy over log(classes): 1 is even.", ""]
    lines += [*_md_table(_IMBALANCE_HEADER, _imbalance_rows(report)), ""]
    lines += [
        "## Images",
        "",
        f"- decoded: {images['decoded']}",
        f"- sizes: {_counter_text(images['sizes'])}",
        f"- modes: {_counter_text(images['modes'])}",
        f"- formats: {_counter_text(images['formats'])}",
        "",
        f"## Unreadable files ({len(report['unreadable'])})",
        "",
    ]
    lines += [f"- `{e['file']}`: {e['reason']}" for e in report["unreadable"]] or ["None."]
    lines += [
        "",
        "## Duplicates",
        "",
        f"Exact: identical decoded pixels ({duplicates['exact_groups']} groups, "
        f"{duplicates['exact_images']} images). Near: 64-bit DCT pHash within "
        f"{duplicates['near_threshold_bits']} bits and different pixels "
        f"({duplicates['near_pairs']} pairs). Full lists are in inspect.json.",
        "",
        *_md_table(_PAIR_HEADER, _pair_rows(report)),
        "",
        f"Images with a duplicate in another split: {_leak_text(report)}.",
        "",
        "## Samples",
        "",
    ]
    lines += [f"![{name}]({file})" for name, file in pictures.items()]
    return "\n".join(lines) + "\n"


def write_inspection(inspection: Inspection, out: Path) -> list[Path]:
    """Write inspect.json, inspect.md, class_distribution.png and samples-<class>.png to `out`
    (removing the samples-<class>.png of classes an earlier report there had)."""
    from ferlab.data.inspect_plots import plot_class_distribution, plot_sample_grid

    report = inspection.report
    out.mkdir(parents=True, exist_ok=True)
    splits = {k: v for k, v in report["class_counts"].items() if k != "all"}
    written = [plot_class_distribution(splits, out / "class_distribution.png")]
    pictures = {}
    for name, images in inspection.samples.items():
        if images:
            file = f"samples-{_slug(name)}.png"
            written.append(plot_sample_grid(images, name, out / file))
            pictures[name] = file
    write_atomic(out / "inspect.json", (json.dumps(report, indent=1) + "\n").encode())
    write_atomic(out / "inspect.md", _markdown(report, pictures).encode())
    for stale in set(out.glob("samples-*.png")) - set(written):  # an earlier report's classes
        stale.unlink()
    return [out / "inspect.json", out / "inspect.md", *written]
