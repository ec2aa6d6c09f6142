"""Data sets: class names and mappings, and reading data sets into split tables."""

from ferlab.data.classes import (
    CANONICAL_CLASSES,
    ClassMapping,
    canonical_order,
    parse_class_options,
)
from ferlab.data.sources import SPLITS, DatasetSource, load_dataset, stratified_split
from ferlab.data.tables import IMAGE_EXTENSIONS, SplitTable

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
