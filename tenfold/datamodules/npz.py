"""Reading ``.npz`` archives with an error that names the file and the fix when one is cut short
or is not an archive (a download or copy interrupted, a file replaced by an error page)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

__all__ = ["load_npz"]


def load_npz(path: str | Path, fix: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path``, read into memory.

    Args:
        path: the archive.
        fix: what to do about a damaged file, for the message (e.g. "delete it: it is
            regenerated").

    Raises:
        ValueError: ``path`` is not a whole ``.npz`` archive; the message names it and ``fix``.
    """
    path = Path(path)
    # numpy reads a file that is not a zip archive as a pickle and refuses that with advice to
    # load it unsafely: check the archive first
    try:
        if not zipfile.is_zipfile(path):
            raise zipfile.BadZipFile("not a zip archive")
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"{path} is truncated or not an .npz archive ({error}): {fix}") from error
