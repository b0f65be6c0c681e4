"""Progress that fits where it goes: a bar on a terminal, one line per epoch in a log file.

Carriage-return bars written to a redirected stream become thousands of lines (a main job
wrote 212 KB of them); with stderr redirected the bars are off and the training loop logs one
line per epoch instead.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm.auto import tqdm


def interactive() -> bool:
    """Whether stderr is a terminal (where a bar redraws in place)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable: Iterable | None = None, *, desc: str, enabled: bool, **kwargs: Any) -> tqdm:
    """A transient tqdm bar when ``enabled`` and stderr is a terminal; otherwise a silent one."""
    return tqdm(iterable, desc=desc, disable=not (enabled and interactive()), leave=False, dynamic_ncols=True,
                **kwargs)


def log_line(text: str, *, enabled: bool) -> None:
    """One progress line on a redirected stderr (on a terminal the bars say it already)."""
    if enabled and not interactive():
        print(text, file=sys.stderr, flush=True)
