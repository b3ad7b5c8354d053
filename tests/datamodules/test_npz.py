"""tenfold.datamodules.npz: whole archives are read; damaged ones are named with the fix."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tenfold.datamodules.npz import load_npz


def test_whole_archives_are_read_and_damaged_ones_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    np.savez_compressed(path, images=np.arange(600).reshape(6, 100), labels=np.arange(6))
    arrays = load_npz(path, "unused")
    assert sorted(arrays) == ["images", "labels"] and arrays["images"][5, 99] == 599
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:300])  # a download cut short
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"<html>not found</html>")  # numpy alone suggests unpickling it
    for damaged in (truncated, garbage):
        with pytest.raises(ValueError, match=re.escape(f"{damaged} is truncated or not an .npz archive") + r".*: fetch it again$"):
            load_npz(damaged, "fetch it again")
