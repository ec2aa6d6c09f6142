"""Exact and near-duplicate images: pixel digests, a 64-bit DCT perceptual hash, Hamming search.

Near pairs are found with a multi-index over hash bands: with a threshold of t bits, two hashes
within t bits agree exactly on at least one of t + 1 bands (pigeonhole), so only hashes sharing a
band value are compared.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from PIL import Image

HASH_INPUT = 32  # side of the gray image the DCT is taken of
MAX_THRESHOLD = 16
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)
_CHUNK = 1 << 22  # hash comparisons per block when a band bucket is large


def pixel_digest(pixels: np.ndarray) -> bytes:
    """Digest of decoded pixels and their shape: equal for re-encodings of the same pixels."""
    digest = hashlib.blake2b(str(pixels.shape).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.digest()


def _dct_matrix(size: int, keep: int) -> np.ndarray:
    """The first `keep` rows of the orthonormal DCT-II matrix of order `size`."""
    k = np.arange(keep)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2 / size)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT8 = _dct_matrix(HASH_INPUT, 8)


def phash(image: Image.Image) -> int:
    """64-bit pHash: the image at 32x32 gray, its 8x8 lowest DCT frequencies above their median.

    Coefficients are rounded to 1e-3 so that flat images (all-zero AC terms) hash alike.
    """
    small = image.convert("L").resize((HASH_INPUT, HASH_INPUT), Image.Resampling.LANCZOS)
    low = np.round(_DCT8 @ np.asarray(small, dtype=np.float64) @ _DCT8.T, 3).ravel()
    return int(np.packbits(low > np.median(low)).view(">u8")[0])


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits per uint64."""
    as_bytes = np.ascontiguousarray(values, dtype=np.uint64).view(np.uint8)
    return _POPCOUNT[as_bytes].reshape(-1, 8).sum(axis=1, dtype=np.int64)


def _band_masks(threshold: int) -> list[tuple[int, int]]:
    """(shift, mask) of threshold + 1 bands that split the 64 bits as evenly as possible."""
    bands = threshold + 1
    edges = [round(64 * i / bands) for i in range(bands + 1)]
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in pairwise(edges)]


def _bucket_pairs(members: np.ndarray, values: np.ndarray, threshold: int) -> np.ndarray:
    """(a, b) index pairs, a < b, among `members` whose values are within `threshold` bits."""
    found = []
    rows = max(1, _CHUNK // len(members))
    for start in range(0, len(members) - 1, rows):
        left = members[start : start + rows]
        xor = values[left][:, None] ^ values[members][None, :]
        close = popcount(xor.ravel()).reshape(xor.shape) <= threshold
        close &= np.arange(len(members))[None, :] > np.arange(start, start + len(left))[:, None]
        i, j = np.nonzero(close)
        a, b = left[i], members[j]
        found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), np.int64)


def close_hash_pairs(values: np.ndarray, threshold: int) -> np.ndarray:
    """(a, b) index pairs, a < b, of distinct `values` (uint64) within `threshold` bits."""
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"threshold must be in 0..{MAX_THRESHOLD}, got {threshold}")
    found = [np.empty((0, 2), np.int64)]
    for shift, mask in _band_masks(threshold):
        keys = (values >> np.uint64(shift)) & np.uint64(mask)
        order = np.argsort(keys, kind="stable")
        cuts = np.flatnonzero(np.diff(keys[order])) + 1
        for members in np.split(order, cuts):
            if len(members) > 1:
                found.append(_bucket_pairs(members, values, threshold))
    return np.unique(np.concatenate(found), axis=0)


def duplicate_pairs(
    digests: Sequence[bytes], hashes: np.ndarray, threshold: int
) -> tuple[list[list[int]], np.ndarray]:
    """Exact groups (same digest, >= 2 members) and near pairs (i, j, distance).

    Near pairs are image pairs, i < j, whose hashes are within `threshold` bits and whose
    pixels differ.
    """
    by_digest: dict[bytes, list[int]] = defaultdict(list)
    for index, digest in enumerate(digests):
        by_digest[digest].append(index)
    exact = [group for group in by_digest.values() if len(group) > 1]

    unique, inverse = np.unique(hashes, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    cuts = np.flatnonzero(np.diff(inverse[order])) + 1
    members = np.split(order, cuts)  # image indices per unique hash, in `unique` order
    near: list[tuple[int, int, int]] = []
    for group in members:  # same hash: distance 0
        near.extend((int(a), int(b), 0) for k, a in enumerate(group) for b in group[k + 1 :])
    for a, b in close_hash_pairs(unique, threshold):
        distance = int(popcount(unique[a : a + 1] ^ unique[b : b + 1])[0])
        near.extend((int(i), int(j), distance) for i in members[a] for j in members[b])
    kept = [(min(i, j), max(i, j), d) for i, j, d in near if digests[i] != digests[j]]
    return exact, np.array(sorted(kept), dtype=np.int64).reshape(-1, 3)
