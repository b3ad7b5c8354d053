"""The 100 glyph images that are the objects of the ESBN relational tasks.

The images ship with the package (``tenfold/datamodules/relational/data/imgs/<id>.png``, copied from
taylorwwebb/emergent_symbols, ``imgs/``; see ``data/README.md`` for the source and licence), so
every machine sees the same objects. Object id ``i`` is the image ``<id>.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["GLYPH_DIR", "NUM_GLYPHS", "GLYPH_SIZE", "load_glyph_pixels", "load_glyphs"]

GLYPH_DIR = Path(__file__).resolve().parent / "data" / "imgs"
"""Where the packaged PNG files are."""
NUM_GLYPHS = 100
"""Number of objects (the official code's ``--n_shapes`` default)."""
GLYPH_SIZE = 32
"""Height and width of every glyph, in pixels."""


def load_glyph_pixels(directory: str | Path = GLYPH_DIR) -> np.ndarray:
    """Reads ``<directory>/0.png`` ... ``99.png``: uint8 ``[100, 32, 32]``, 255 is the white
    background.

    Raises:
        FileNotFoundError: a file is missing (the message says where to get it).
        ValueError: an image is not 8-bit greyscale of 32 x 32 pixels.
    """
    directory = Path(directory)
    images = []
    for object_id in range(NUM_GLYPHS):
        path = directory / f"{object_id}.png"
        if not path.is_file():
            raise FileNotFoundError(
                f"glyph image {path} is missing: the 100 files 0.png..99.png ship with the "
                "package in tenfold/datamodules/relational/data/imgs/ (reinstall it, or copy imgs/ of "
                "https://github.com/taylorwwebb/emergent_symbols there)"
            )
        with Image.open(path) as image:
            if image.mode != "L" or image.size != (GLYPH_SIZE, GLYPH_SIZE):
                raise ValueError(
                    f"glyph image {path} is {image.mode} {image.size[0]}x{image.size[1]}, "
                    f"expected 8-bit greyscale (L) {GLYPH_SIZE}x{GLYPH_SIZE}"
                )
            images.append(np.asarray(image, dtype=np.uint8))
    return np.stack(images)


def load_glyphs(directory: str | Path = GLYPH_DIR) -> Tensor:
    """The objects as float32 ``[100, 1, 32, 32]`` in ``[0, 1]``: pixel / 255, not inverted, as the
    official code (emergent_symbols, ``train_and_eval.py``) loads them."""
    pixels = load_glyph_pixels(directory)
    return torch.from_numpy(pixels).to(torch.float32).div_(255.0).unsqueeze(1)
