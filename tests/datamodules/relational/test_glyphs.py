"""The 100 packaged ESBN glyphs: fixed content (checksum), distinct objects, scaling, and clear
errors for missing or malformed files."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from tenfold.datamodules.relational.glyphs import load_glyph_pixels, load_glyphs

# sha256 of the stacked uint8 array [100, 32, 32] of imgs/0.png..99.png of
# taylorwwebb/emergent_symbols (commit 55cb8f90f62c0269f647b4a55fa2ee96f9ec6c36)
GLYPHS_SHA256 = "b8d8cf8beca786335c9f253c025cd3d726f6639c5d965b80c280245f06e338e7"


def test_pixels_have_the_fixed_checksum():
    pixels = load_glyph_pixels()
    assert pixels.shape == (100, 32, 32) and pixels.dtype == np.uint8
    assert hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest() == GLYPHS_SHA256


def test_glyphs_are_distinct_and_scaled_like_the_official_loader():
    pixels = load_glyph_pixels()
    glyphs = load_glyphs()
    assert glyphs.shape == (100, 1, 32, 32) and glyphs.dtype == torch.float32
    assert torch.equal(glyphs[:, 0], torch.from_numpy(pixels).float() / 255.0)
    assert glyphs.min() == 0.0 and glyphs.max() == 1.0
    assert torch.all(glyphs[:, 0, 0, 0] == 1.0)  # white background, not inverted
    assert len({image.tobytes() for image in pixels}) == 100
    # every glyph has ink: no blank image stands for an object
    assert torch.all((glyphs < 0.5).flatten(1).sum(1) > 0)


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"0\.png.*taylorwwebb/emergent_symbols"):
        load_glyph_pixels(tmp_path)


def test_malformed_image_is_rejected(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "0.png")
    with pytest.raises(ValueError, match=r"RGB 32x32, expected 8-bit greyscale"):
        load_glyph_pixels(tmp_path)
