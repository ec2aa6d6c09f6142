"""Bulk work on Ray, on this machine or an existing cluster; Ray is imported only here, lazily.

``ray_outcomes`` runs image files through a Ray Data pipeline: each batch of paths is read,
decoded, detected and classified on an actor pool whose actors each hold one Recognizer, and the
outcomes come back to the caller in input order. ``run_tasks`` runs one Ray task per job (one
video each for ``ferlab video``). Workers need ferlab installed and the input paths readable;
paths go to them absolute (a worker's working folder is not this process's), and come back in
the results and messages as they were given.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ferlab.errors import ConfigError, FerlabError
from ferlab.inference.batch import FileOutcome, ImageFile, predict_files
from ferlab.inference.image_results import ImageResult

WINDOW = 50_000  # input paths handed to Ray at a time: driver memory stays flat
ADDRESS = re.compile(r"auto|local|ray://[^\s:/]+(:(?P<client>\d+))?|[^\s:/]+:(?P<port>\d+)")
JOIN_WAIT = {  # an address that does not answer fails in about 15 s, not minutes
    "RAY_gcs_server_port_wait_time_s": "1",  # tries at joining the cluster's GCS
    "RAY_py_gcs_connect_timeout_s": "5",  # seconds a try waits for the GCS to answer
}
FERLAB_MESSAGE = re.compile(r"ferlab\.errors\.\w+: (.+)")


def check_address(address: str | None) -> None:
    """ConfigError unless ``address`` is None, "auto", "local", ``HOST:PORT`` or
    ``ray://HOST[:PORT]`` (the forms ``ray.init`` takes)."""
    if address is None:
        return
    form = ADDRESS.fullmatch(address)
    port = None if form is None else form["port"] or form["client"]
    if form is None or (port is not None and not 0 < int(port) < 65536):
        raise ConfigError(
            f"--ray-address: expected auto, HOST:PORT (e.g. 10.0.0.1:6379) or ray://HOST:PORT, "
            f"got '{address}'"
        )


def connect(address: str | None = None) -> Any:
    """The ``ray`` module, connected: to ``address`` ("auto": the cluster this machine is part
    of), or a new local Ray when None; a Ray already initialised in this process is used as is.
    An address of another form, one that does not answer within ``JOIN_WAIT`` or a local Ray
    that cannot start is a ConfigError.

    A local Ray starts with token authentication (Ray's default) without announcing it, and Ray
    Data's note that its progress bars are off (ferlab draws its own) is not shown."""
    check_address(address)
    if "ray" not in sys.modules:  # Ray reads these once, on import
        if address is None:
            os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default, without its warning
        elif address != "local":
            for name, value in JOIN_WAIT.items():
                os.environ.setdefault(name, value)
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'ferlab[ray]'") from None
    if not ray.is_initialized():
        _init(ray, address)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    return ray


def _init(ray: Any, address: str | None) -> None:
    """``ray.init``: a new local Ray when ``address`` is None (not a cluster that Ray's own
    defaults would find); a failure to join or start Ray becomes one ConfigError line."""
    try:
        ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError, OSError, ray.exceptions.RayError) as exc:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "a local Ray could not start" if address is None else f"--ray-address {address}"
        raise ConfigError(f"{where}: {problem}") from None


def worker_error(exc: Exception) -> FerlabError:
    """One line for a Ray worker that failed (e.g. died while it loaded the model): the ferlab
    error it raised where its message tells it, else Ray's first line."""
    text = str(exc)
    found = FERLAB_MESSAGE.findall(text)
    problem = found[-1].strip() if found else (text.strip().splitlines() or [type(exc).__name__])[0]
    return FerlabError(f"a Ray worker failed: {problem}")


def for_workers(value: Any) -> Any:
    """``value`` with its paths absolute: each Path, a model reference (``ref``) that names a file
    or folder here, and those in dicts within."""
    if isinstance(value, Path):
        return value.resolve()
    if isinstance(value, dict):
        return {
            key: _ref(item) if key == "ref" else for_workers(item) for key, item in value.items()
        }
    return value


def _ref(ref: Any) -> Any:
    if isinstance(ref, str) and Path(ref).exists():
        return str(Path(ref).resolve())
    return for_workers(ref)


def _as_given(message: str, given: Any, sent: Any) -> str:
    """``message`` with the absolute paths of ``sent`` spelt as in ``given``."""
    if isinstance(given, dict):
        for key, item in given.items():
            message = _as_given(message, item, sent[key])
        return message
    if isinstance(given, str | Path) and str(given) != str(sent):
        return message.replace(str(sent), str(given))
    return message


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
    sent = for_workers(options)
    iterator = iter(files)
    while window := list(itertools.islice(iterator, WINDOW)):
        paths = [str(file.path.resolve()) for file in window]
        dataset = ray.data.from_items([{"path": path} for path in paths])
        predicted = dataset.map_batches(
            _Predictor,
            fn_constructor_kwargs={"options": sent, "batch_size": batch_size},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
        )
        try:
            for file, path, row in zip(window, paths, predicted.iter_rows(), strict=True):
                yield _outcome(file, path, row)
        except ray.exceptions.RayError as exc:
            raise worker_error(exc) from None


def _outcome(file: ImageFile, path: str, row: dict[str, Any]) -> FileOutcome:
    """The outcome of ``file``, sent to the workers as ``path``, from its row."""
    if row["error"]:
        return FileOutcome(file, error=row["error"].replace(path, str(file.path)))
    result = ImageResult.from_dict(json.loads(row["result"]))
    result.path = str(file.path)
    return FileOutcome(file, result=result)


def run_tasks(
    function: Callable[..., Any], jobs: list[dict[str, Any]], *, address: str | None = None
) -> Iterator[tuple[int, Any, str | None]]:
    """``function(**job)`` as one Ray task per job; ``(index, result, None)`` as each finishes,
    or ``(index, None, message)`` where it raised a FerlabError; a worker that fails otherwise
    ends the run with a FerlabError."""
    ray = connect(address)
    remote = ray.remote(num_cpus=1)(function)
    sent = [for_workers(job) for job in jobs]
    pending = {remote.remote(**job): index for index, job in enumerate(sent)}
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(ready)
        try:
            yield index, ray.get(ready), None
        except ray.exceptions.RayTaskError as exc:
            if not isinstance(exc.cause, FerlabError):
                raise worker_error(exc) from None
            yield index, None, _as_given(str(exc.cause), jobs[index], sent[index])
        except ray.exceptions.RayError as exc:
            raise worker_error(exc) from None
