"""Safe image loading and the paper's foreground masking, one test per kind of bad or odd input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from nearid.images.decode import apply_mask, load_image, load_mask, load_masked
from nearid.io.errors import ImageError, MaskError


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` with a tiny (invalid) body: never worth decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: no such file"):
        load_image(tmp_path / "nope.png")


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match=r"noise\.png: not an image file"):
        load_image(path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match=r"notes\.png: not an image file"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: corrupt or truncated image"):
        load_image(path)


def test_huge_dimensions_above_our_limit_are_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    _png_header_only(path, 11_000, 10_000)  # 110 MP: above nearid's 100 MP limit
    with pytest.raises(ImageError, match=r"huge\.png: 11000x10000 pixels is above the limit of 100,000,000"):
        load_image(path)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    _png_header_only(path, 30_000, 30_000)  # 900 MP: PIL's own guard fires while opening
    with pytest.raises(ImageError, match=r"bomb\.png: image is too large to decode safely"):
        load_image(path)


def test_sixteen_bit_png_is_rescaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 128], [65535, 257 * 10]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = load_image(path)
    assert rgb.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(rgb)[..., 0], [[0, 128], [255, 10]])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    rgb = np.asarray(load_image(path)).astype(int)
    assert rgb.shape == (16, 16, 3)
    assert rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60 and rgb[..., 2].mean() < 60


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "1", "P", "LA", "RGBA", "I;16", "I", "F"])
def test_every_mode_becomes_8bit_rgb(mode):
    image = Image.new("RGB", (8, 8), (90, 90, 90)).convert(mode)
    assert load_image(image).mode == "RGB"


def test_transparency_is_composited_over_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red; the rest is fully transparent black
    rgb = np.asarray(load_image(rgba))
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])


def test_palette_with_transparency():
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    np.testing.assert_array_equal(np.asarray(load_image(palette)), [[[255, 255, 255], [0, 255, 0]]])


def test_apply_mask_blacks_out_background():
    image = Image.fromarray(np.full((3, 4, 3), 200, dtype=np.uint8))
    mask = np.zeros((3, 4), dtype=np.uint8)
    mask[1, 1:3] = 1  # any value > 0 is foreground
    out = np.asarray(apply_mask(image, mask))
    expected = np.zeros((3, 4, 3), dtype=np.uint8)
    expected[1, 1:3] = 200
    np.testing.assert_array_equal(out, expected)


def test_mask_of_half_size_is_resized_nearest():
    image = Image.fromarray(np.full((4, 4, 3), 100, dtype=np.uint8))
    mask = np.array([[255, 0], [0, 0]], dtype=np.uint8)
    out = np.asarray(apply_mask(image, mask))[..., 0]
    np.testing.assert_array_equal(out, [[100, 100, 0, 0], [100, 100, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_mask_of_other_shape_is_an_error(tmp_path):
    image_path, mask_path = tmp_path / "a.png", tmp_path / "a_mask.png"
    Image.new("RGB", (40, 20)).save(image_path)
    Image.new("L", (20, 20), 255).save(mask_path)
    with pytest.raises(MaskError, match=r"a_mask\.png: mask is 20x20 but its image is 40x20"):
        load_masked(image_path, mask_path)


def test_empty_mask_is_an_error(tmp_path):
    mask_path = tmp_path / "empty.png"
    Image.new("L", (8, 8), 0).save(mask_path)
    with pytest.raises(MaskError, match=r"empty\.png: mask is empty"):
        load_masked(Image.new("RGB", (8, 8)), mask_path)


def test_rgb_mask_counts_any_channel():
    mask = np.zeros((2, 2, 3), dtype=np.uint8)
    mask[0, 1, 2] = 3
    np.testing.assert_array_equal(load_mask(Image.fromarray(mask)), [[False, True], [False, False]])
