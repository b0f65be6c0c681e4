"""Seeded train/val/test splitting that keeps groups of images (e.g. one car's views) together.

Unlike the core's stratified classification split, segmentation has no classes to balance
but may have near-duplicate images, which must not end up on both sides of a split.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from onnx_run.errors import UserError

__all__ = ["split_indices"]


def split_indices(n: int, groups: Sequence[str] | None, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test indices; samples sharing a group name stay in one split.

    Whole groups are drawn in a random order into test, then val, until each holds its
    fraction of the samples (at least one group each). With fewer than three groups the
    samples are split one by one.
    """
    if n < 3:
        raise UserError(f"the dataset has {n} image(s); need at least 3 to split into train/val/test")
    rng = np.random.default_rng(int(seed))
    if groups is None or len(set(groups)) < 3:
        groups = [str(i) for i in range(n)]
    names = sorted(set(groups))
    order = [names[i] for i in rng.permutation(len(names))]
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    parts: list[list[int]] = [[], []]  # test, val
    pos = 0
    for part, fraction in zip(parts, (test_fraction, val_fraction)):
        target = max(1, round(fraction * n))
        while pos < len(order) - 1 and (not part or len(part) < target):
            part += members[order[pos]]
            pos += 1
    train = [i for g in order[pos:] for i in members[g]]
    if not train:
        raise UserError(f"the dataset has {n} images in {len(names)} groups: too few to leave any for training")
    test, val = parts
    return np.sort(np.array(train)), np.sort(np.array(val)), np.sort(np.array(test))
