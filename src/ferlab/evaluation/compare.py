"""Several trained models side by side on one split: scores, cost, speed and McNemar's tests.

The split is loaded once, with the first model's split settings (fractions, seed), and decoded per
model the way it was trained (image size, colour). Pairs are tested on the samples both models
scored (all of them unless class options differ); no correction for multiple pairs is applied.
"""

from __future__ import annotations

import html
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from scipy.stats import binomtest, chi2

from ferlab.data.classes import ClassMapping
from ferlab.data.sources import DatasetSource
from ferlab.errors import ConfigError, DataError
from ferlab.evaluation.evaluate import (
    SplitScorer,
    check_split,
    crowd_mapping,
    labelled_source,
    predict_probs,
    trained_split,
)
from ferlab.evaluation.metrics import ECE_BINS, classification_metrics
from ferlab.inference.runner import ModelRunner
from ferlab.inference.runtime import load_model
from ferlab.models.ensemble import check_distinct_files
from ferlab.outputs import write_atomic
from ferlab.run_folder import RunFolder
from ferlab.tta_modes import tta_mode

EXACT_BELOW = 25  # discordant pairs under which McNemar's test is the exact binomial one
SPEED_BATCH = 64
SCORE_HEADER = (
    "run/model",
    "arch",
    "accuracy",
    "macro-F1",
    "kappa",
    f"ECE ({ECE_BINS} bins)",
    "params",
    "file",
    "train time",
    "faces/s",
)


@dataclass(frozen=True)
class McNemar:
    """``b``: samples only the first model got right, ``c``: only the second; two-sided ``p``."""

    b: int
    c: int
    p: float
    method: str  # "exact" (binomial) or "chi2" (with continuity correction)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's test on two boolean per-sample correctness vectors over the same samples."""
    a, b_ok = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b, c = int(np.sum(a & ~b_ok)), int(np.sum(~a & b_ok))
    if b + c < EXACT_BELOW:
        p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        return McNemar(b, c, float(p), "exact")
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return McNemar(b, c, float(chi2.sf(statistic, df=1)), "chi2")


@dataclass
class ModelScore:
    """One model's row; ``train_seconds`` is None unless the model file sits in its run folder,
    ``params`` None for an export (ONNX)."""

    ref: str
    model: str
    samples: int
    accuracy: float
    macro_f1: float
    kappa: float | None
    ece: float
    params: int | None
    file_bytes: int
    train_seconds: float | None
    faces_per_s: float


@dataclass
class PairTest:
    first: str
    second: str
    samples: int
    test: McNemar
    significant: bool


@dataclass
class Comparison:
    data: str
    split: str
    alpha: float
    scores: list[ModelScore]
    pairs: list[PairTest]
    threads: int  # CPU threads PyTorch ran the speed measurement on

    def tables(self) -> list[tuple[list[str], list[list[str]]]]:
        """The score table and the pairwise table, as (header, rows) of strings."""
        scores = [
            [
                s.ref,
                s.model,
                f"{s.accuracy:.4f}",
                f"{s.macro_f1:.4f}",
                "n/a" if s.kappa is None else f"{s.kappa:.4f}",
                f"{s.ece:.4f}",
                "n/a" if s.params is None else f"{s.params / 1e6:.2f} M",
                f"{s.file_bytes / 1e6:.1f} MB",
                "n/a" if s.train_seconds is None else f"{s.train_seconds:.0f} s",
                f"{s.faces_per_s:.0f}",
            ]
            for s in self.scores
        ]
        pairs = [
            [
                p.first,
                p.second,
                str(p.samples),
                str(p.test.b),
                str(p.test.c),
                p.test.method,
                f"{p.test.p:.4g}",
                "yes" if p.significant else "no",
            ]
            for p in self.pairs
        ]
        return [
            (
                list(SCORE_HEADER),
                scores,
            ),
            (["A", "B", "n", "b (A only)", "c (B only)", "test", "p", f"p < {self.alpha}"], pairs),
        ]

    def caption(self) -> str:
        threads = f"{self.threads} CPU thread{'s' if self.threads != 1 else ''}"
        return (
            f"{self.data} [{self.split}]; faces/s: on {threads} (PyTorch "
            f"unless the arch names another runtime), batch {SPEED_BATCH}; McNemar: exact "
            f"binomial when b + c < {EXACT_BELOW}, else chi-square with continuity correction, "
            "no correction for multiple pairs"
        )

    def markdown(self) -> str:
        parts = [f"Comparison on {self.caption()}."]
        for header, rows in self.tables():
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            parts.append("\n".join(lines))
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        body = [f"<p>Comparison on {html.escape(self.caption())}.</p>"]
        for header, rows in self.tables():
            cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            lines = [f"<table>\n<tr>{cells}</tr>"]
            for row in rows:
                lines.append("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>")
            body.append("\n".join(lines) + "\n</table>")
        style = (
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #999;padding:4px}"
        )
        return (
            f'<!doctype html>\n<html><head><meta charset="utf-8"><title>ferlab compare</title>'
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
        )

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``compare.md`` and ``compare.html`` into ``out_dir``; returns their paths."""
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        md, page = folder / "compare.md", folder / "compare.html"
        write_atomic(md, self.markdown().encode())
        write_atomic(page, self.html().encode())
        return md, page


def _parameter_count(runner: ModelRunner) -> int | None:
    """Trainable and frozen parameters of a PyTorch model; None for an export."""
    if runner.bundle is None:
        return None
    return sum(p.numel() for p in runner.bundle.model.parameters())


def _score(
    ref: str,
    runner: ModelRunner,
    source: DatasetSource,
    split: str,
    bad: str,
    tta: str | bool | None,
    mapping: ClassMapping,
) -> tuple[ModelScore, np.ndarray, np.ndarray]:
    """The model's row, its per-sample correctness and the source rows of the samples; accuracy,
    macro-F1, kappa and ECE as ``evaluate`` gives them (over all the scored classes)."""
    scorer = SplitScorer(runner, mapping, runner.spec.prior_tau)
    mode = tta_mode(runner.spec.tta if tta is None else tta)
    data = trained_split(runner.spec, source, split, mapping, bad)
    predict_probs(runner, data.images[:SPEED_BATCH], SPEED_BATCH, tta=mode)  # warm-up
    start = time.perf_counter()
    labels, probs, _ = scorer.score(data, SPEED_BATCH, mode)
    elapsed = time.perf_counter() - start
    predicted = probs.argmax(axis=1)
    metrics = classification_metrics(labels, probs, scorer.classes)
    how = ", ".join([runner.label] + ([f"{mode} TTA"] if mode != "none" else []))
    score = ModelScore(
        ref=ref,
        model=f"{runner.name} ({how})",
        samples=len(labels),
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
        kappa=metrics["cohen_kappa"],
        ece=metrics["ece"],
        params=_parameter_count(runner),
        file_bytes=runner.path.stat().st_size,
        train_seconds=RunFolder(runner.source.parent).train_seconds(runner.source),
        faces_per_s=len(labels) / max(elapsed, 1e-9),
    )
    return score, predicted == labels, data.rows.numpy()


def _warn_other_splits(
    names: list[str], runners: list[ModelRunner], source: DatasetSource, split: str
) -> None:
    """A warning for each model that drew its splits from this data otherwise than the first
    (another ``--seed`` or fraction): the split compared on may hold images it trained on."""
    if split not in source.made_splits:
        return
    first = runners[0].spec.split_options()
    for name, runner in zip(names[1:], runners[1:], strict=True):
        own = runner.spec.split_options()
        if own != first:
            differ = ", ".join(
                f"{key} {own[key]} (not {first[key]})" for key in own if own[key] != first[key]
            )
            warnings.warn(
                f"{name}: trained with {differ}: this data has no fixed splits, and the "
                f"'{split}' split drawn as {names[0]} drew it may hold images {name} trained on",
                stacklevel=3,
            )


@contextmanager
def _each_warning_once() -> Iterator[None]:
    """Warnings of the block given once each when it ends: every model decodes the split again
    (at its own input size) and would repeat what the data's files earned."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        for category, text in dict.fromkeys((item.category, str(item.message)) for item in caught):
            warnings.warn(text, category, stacklevel=3)


def compare_models(
    refs: list[str | Path | ModelRunner],
    data: str | Path,
    *,
    split: str = "test",
    alpha: float = 0.05,
    on_bad_file: str = "skip",
    tta: str | bool | None = None,
    labels: str | Path | None = None,
    backend: str = "auto",
    keep: str | None = None,
    rename: str | None = None,
    merge: str | None = None,
) -> Comparison:
    """Score each model reference (opened on ``backend`` by :func:`ferlab.load_model`) or runner
    in ``refs`` on ``split`` of ``data``; test each pair on the samples both scored. ``tta``: as
    in ``evaluate`` (None: each model's own); ``labels``: crowd votes scored as ``evaluate``
    does; ``keep``/``rename``/``merge``: the data's classes mapped onto every model's, as in
    ``evaluate``."""
    names = [str(ref) if isinstance(ref, str | Path) else str(ref.source) for ref in refs]
    if not refs or len(set(names)) < len(names):
        raise ConfigError(f"compare needs distinct models, got {', '.join(names) or 'none'}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    runners = [load_model(ref, backend) for ref in refs]
    check_distinct_files(names, [runner.source.resolve() for runner in runners])
    source = labelled_source(runners[0].spec, data, on_bad_file, labels)
    check_split(source, split)
    _warn_other_splits(names, runners, source, split)
    scores, correct, rows = [], {}, {}
    with _each_warning_once():
        for name, runner in zip(names, runners, strict=True):
            try:
                mapping, _ = crowd_mapping(
                    runner.spec, source, keep, rename, merge, labels is not None
                )
            except (ConfigError, DataError) as exc:
                raise type(exc)(f"{name}: {exc}") from None
            score, hits, sample_rows = _score(
                name, runner, source, split, on_bad_file, tta, mapping
            )
            scores.append(score)
            correct[score.ref], rows[score.ref] = hits, sample_rows
    pairs = []
    for a, b in combinations([s.ref for s in scores], 2):
        _, in_a, in_b = np.intersect1d(rows[a], rows[b], return_indices=True)
        test = mcnemar(correct[a][in_a], correct[b][in_b])
        pairs.append(PairTest(a, b, len(in_a), test, test.p < alpha))
    return Comparison(str(data), split, alpha, scores, pairs, torch.get_num_threads())
