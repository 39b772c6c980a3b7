"""Write a directory artifact atomically: build it in `<out>.partial`, then swap it in.

A crashed or diverged run leaves neither a half-written `<out>` nor a stale `.partial`
that a later stage could mistake for a finished artifact; the previous `<out>` is kept
until the new one is in place.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`, keeping the old `out` until the new one is in place."""
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a fresh `<out>.partial` to write into; on success it becomes `out`, on error it is removed."""
    out = Path(out)
    tmp = partial_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
