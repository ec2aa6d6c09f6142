"""Data sets: class names and mappings, and reading data sets into split tables."""

from ferlab.data.classes import (
    CANONICAL_CLASSES,
    ClassMapping,
    canonical_order,
    parse_class_options,
)
from ferlab.data.sources import (
    IMAGE_EXTENSIONS,
    SPLITS,
    DatasetSource,
    SplitTable,
    load_dataset,
    stratified_split,
)

__all__ = [
    "CANONICAL_CLASSES",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "ClassMapping",
    "DatasetSource",
    "SplitTable",
    "canonical_order",
    "load_dataset",
    "parse_class_options",
    "stratified_split",
]
