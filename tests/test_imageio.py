"""Every kind of bad image file gets a per-file error naming the file and the reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from detect.imageio import ImageReadError, decode_image, read_image


def test_reads_real_photo(bus_jpg):
    image = read_image(bus_jpg)
    assert image.shape == (1080, 810, 3) and image.dtype == np.uint8


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p, bus: p.write_bytes(b""), "empty file"),
        (lambda p, bus: p.write_text("just some text, not pixels"), "not an image"),
        (lambda p, bus: p.write_bytes(bus.read_bytes()[:20000]), "truncated"),
        (lambda p, bus: p.mkdir(), "is a directory"),
    ],
    ids=["zero-byte", "text", "truncated", "directory"],
)
def test_bad_files(tmp_path, bus_jpg, make, reason):
    path = tmp_path / "photo.jpg"
    make(path, bus_jpg)
    with pytest.raises(ImageReadError, match=reason) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.jpg")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(path)  # a small file claiming 144 megapixels
    assert path.stat().st_size < 2_000_000
    with pytest.raises(ImageReadError, match="too large"):
        read_image(path)


def test_exif_orientation_applied_and_reduced_decode(bus_jpg):
    img = Image.open(bus_jpg)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=90)
    decoded = decode_image(buf.getvalue(), "rotated.jpg")
    assert decoded.image.shape[:2] == (810, 1080)  # portrait photo shown landscape
    assert decoded.full_size == (1080, 810)
    small = decode_image(buf.getvalue(), "rotated.jpg", max_side=300)
    assert 300 <= max(small.image.shape[:2]) < 1080 and small.scale < 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_pixels_match_pillow_for_every_exif_orientation(bus_jpg, orientation):
    """The OpenCV JPEG path (full and DCT-reduced) gives Pillow's pixels after `exif_transpose`."""
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.open(bus_jpg).save(buf, "JPEG", exif=exif.tobytes(), quality=90)
    data = buf.getvalue()
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))[:, :, ::-1]
    assert np.array_equal(decode_image(data).image, reference)
    draft = Image.open(io.BytesIO(data))
    draft.draft("RGB", (270, 360))  # what max_side=300 asks of an 810x1080 photo: 1/2 scale
    reduced = np.asarray(ImageOps.exif_transpose(draft).convert("RGB"))[:, :, ::-1]
    small = decode_image(data, max_side=300).image
    assert small.shape == reduced.shape and max(small.shape[:2]) == 540
    assert np.array_equal(small, reduced)


def test_jpeg_with_data_after_the_image_still_decodes(bus_jpg):
    """Phones' motion photos append a video after the JPEG's end marker: the picture is still read."""
    data = bus_jpg.read_bytes() + b"ftypmp42" + bytes(range(256)) * 64
    assert np.array_equal(decode_image(data, "motion.jpg").image, read_image(bus_jpg))
