"""Seeded, stratified train/val/test splitting of classification datasets.

Kept apart from the formats so that every format is split the same way: the same seed
always gives the same split, whichever reader produced the samples.
"""

from __future__ import annotations

import numpy as np

from onnx_run.errors import UserError

__all__ = ["cap_train", "check_fractions", "split_indices"]


def _split_once(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int, what: str):
    """Seeded split of ``idx`` into (rest, part), stratified by class whenever possible."""
    from sklearn.model_selection import train_test_split

    try:
        rest, part = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError:  # a class too small to appear on both sides: fall back to a plain shuffle
        try:
            rest, part = train_test_split(idx, test_size=fraction, random_state=seed)
        except ValueError:
            raise UserError(
                f"{what}: cannot split {len(idx)} image(s) into a {fraction:.0%} part and a non-empty rest; "
                "add images or lower val_fraction/test_fraction"
            ) from None
    return np.sort(rest), np.sort(part)


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int, what: str):
    """Train/val/test indices where val and test are the given fractions of all samples."""
    idx = np.arange(len(labels))
    empty = idx[:0]
    rest, test = _split_once(idx, labels, test_fraction, seed, what) if test_fraction > 0 else (idx, empty)
    if val_fraction > 0:
        train, val = _split_once(rest, labels[rest], val_fraction / (1.0 - test_fraction), seed, what)
    else:
        train, val = rest, empty
    return train, val, test


def cap_train(train: np.ndarray, labels: np.ndarray, max_train: int | None, seed: int) -> np.ndarray:
    """Seeded (stratified where possible) subset of the training indices for quick runs."""
    if max_train is None or max_train >= len(train):
        return train
    from sklearn.model_selection import train_test_split

    try:
        keep, _ = train_test_split(train, train_size=max_train, random_state=seed, stratify=labels[train])
    except ValueError:
        keep, _ = train_test_split(train, train_size=max_train, random_state=seed)
    return np.sort(keep)


def check_fractions(val_fraction, test_fraction, max_train) -> None:
    """Validate the split settings before any file is read, so mistakes fail fast."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise UserError(f"{key} {value!r} is invalid; expected a number in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise UserError(
            f"val_fraction {val_fraction} + test_fraction {test_fraction} >= 1 leaves no training data; "
            "expected a sum below 1"
        )
    is_int = isinstance(max_train, (int, np.integer)) and not isinstance(max_train, bool)
    if max_train is not None and (not is_int or max_train < 1):
        raise UserError(f"max_train {max_train!r} is invalid; expected a positive integer or none")
