"""ferlab: facial expression recognition toolkit.

The public API is imported lazily, so ``import ferlab`` stays fast::

    import ferlab
    result = ferlab.train(data="fer2013/", model="mobilenet_v2", strategy="progressive")
    report = ferlab.evaluate(result.run_dir, "fer2013/", split="test")
"""

from __future__ import annotations

from ferlab.lazy import lazy_dir, lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "train": "ferlab.training.run",
    "TrainResult": "ferlab.training.run",
    "evaluate": "ferlab.evaluation.evaluate",
    "EvaluationResult": "ferlab.evaluation.evaluate",
    "TrainConfig": "ferlab.config",
    "load_config": "ferlab.config",
    "create_model": "ferlab.models.registry",
    "list_models": "ferlab.models.registry",
    "load_dataset": "ferlab.data.sources",
    "FerlabError": "ferlab.errors",
    "load_model": "ferlab.inference.runtime",
    "ModelRunner": "ferlab.inference.runner",
    "ModelSpec": "ferlab.models.spec",
    "combine_models": "ferlab.models.combine",
    "Recognizer": "ferlab.inference.recognizer",
    "FaceResult": "ferlab.inference.results",
}

__all__ = [*_EXPORTS, "__version__"]

__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
