"""Bulk work on Ray, on this machine or an existing cluster; Ray is imported only here, lazily.

``ray_outcomes`` runs image files through a Ray Data pipeline: each batch of paths is read,
decoded, detected and classified on an actor pool whose actors each hold one Recognizer, and the
outcomes come back to the caller in input order. ``run_tasks`` runs one Ray task per job (one
video each for ``ferlab video``). Workers need ferlab installed and the input paths readable.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ferlab.errors import ConfigError, FerlabError
from ferlab.inference.batch import FileOutcome, ImageFile, predict_files
from ferlab.inference.image_results import ImageResult

WINDOW = 50_000  # input paths handed to Ray at a time: driver memory stays flat


def connect(address: str | None = None) -> Any:
    """The ``ray`` module, connected: to ``address`` ("auto": the cluster this machine is part
    of), or a new local Ray when None; a Ray already initialised in this process is used as is.

    A local Ray starts with token authentication (Ray's default) without announcing it, and Ray
    Data's note that its progress bars are off (ferlab draws its own) is not shown."""
    if address is None and "ray" not in sys.modules:  # Ray reads it once, on import
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default, without its warning
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'ferlab[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    return ray


class _Predictor:
    """A Ray Data actor: one Recognizer, a batch of paths in, results (JSON) or errors out."""

    def __init__(self, options: dict[str, Any], batch_size: int) -> None:
        from ferlab.inference.recognizer import Recognizer

        self.recognizer = Recognizer.load(**options)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [ImageFile(Path(path), Path(Path(path).name)) for path in batch["path"]]
        results, errors = [], []
        for outcome in predict_files(self.recognizer, files, batch_size=self.batch_size):
            found = outcome.result
            results.append("" if found is None else json.dumps(found.to_dict()))
            errors.append(outcome.error or "")
        return {"path": batch["path"], "result": np.array(results), "error": np.array(errors)}


def ray_outcomes(
    files: Iterable[ImageFile],
    options: dict[str, Any],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    address: str | None = None,
) -> Iterator[FileOutcome]:
    """One outcome per file, in order, as ``predict_files`` gives them (without the pixels);
    ``options``: ``Recognizer.load``'s arguments; ``workers``: actors (default: one per CPU)."""
    ray = connect(address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    actors = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    iterator = iter(files)
    while window := list(itertools.islice(iterator, WINDOW)):
        dataset = ray.data.from_items([{"path": str(file.path)} for file in window])
        predicted = dataset.map_batches(
            _Predictor,
            fn_constructor_kwargs={"options": options, "batch_size": batch_size},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
        )
        for file, row in zip(window, predicted.iter_rows(), strict=True):
            if row["error"]:
                yield FileOutcome(file, error=row["error"])
            else:
                result = ImageResult.from_dict(json.loads(row["result"]))
                yield FileOutcome(file, result=result)


def run_tasks(
    function: Callable[..., Any], jobs: list[dict[str, Any]], *, address: str | None = None
) -> Iterator[tuple[int, Any, str | None]]:
    """``function(**job)`` as one Ray task per job; ``(index, result, None)`` as each finishes,
    or ``(index, None, message)`` where it raised a FerlabError."""
    ray = connect(address)
    remote = ray.remote(num_cpus=1)(function)
    pending = {remote.remote(**job): index for index, job in enumerate(jobs)}
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready)
        try:
            yield index, ray.get(ready), None
        except ray.exceptions.RayTaskError as exc:
            if not isinstance(exc.cause, FerlabError):
                raise
            yield index, None, str(exc.cause)
