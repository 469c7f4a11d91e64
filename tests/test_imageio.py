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


def test_only_regular_files_are_read_and_the_bytes_read_are_capped(tmp_path, bus_jpg):
    """Issue 14, item 6: a link to /dev/zero used 23 GB and a FIFO hung; now each gets its reason at once."""
    import os

    from detect.imageio import FileReadError, read_file

    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # nobody ever writes to it: opening it for reading the usual way blocks forever
    sparse = tmp_path / "huge.jpg"
    with sparse.open("wb") as fh:
        fh.truncate(300 * 2**20)  # 300 MB that take no disk
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    cases = {zero: "not a regular file (a character device)", fifo: "not a regular file (a FIFO)",
             sparse: "larger than 200 MB (300 MB)", loop: "symbolic link loop"}
    for path, reason in cases.items():
        with pytest.raises(ImageReadError) as err:
            read_image(path)
        assert err.value.reason == reason and str(path) in str(err.value)
    # /proc files say they are empty and are not: the bytes actually read are what is capped
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(FileReadError, match="larger than 0 MB .*reading stopped"):
        read_file("/proc/self/status", max_bytes=64)
    assert read_file(bus_jpg) == bus_jpg.read_bytes()


@pytest.mark.slow  # 5 s: writes and decodes a 90-megapixel PNG; the default suite's ~15-minute budget
def test_a_90_megapixel_png_is_read_under_the_documented_100_mp_limit(tmp_path):
    """Issue 14, item 7: Pillow's own warning (from ~89.5 MP) refused it as a decompression bomb."""
    path = tmp_path / "panorama.png"
    Image.new("L", (15000, 6000), 128).save(path)  # 90 MP, compresses to a few hundred kB
    decoded = decode_image(path)
    assert decoded.full_size == (15000, 6000) and decoded.image.shape == (6000, 15000, 3)
    with pytest.raises(ImageReadError, match="image too large: 15000x6000 = 90 MP > limit 80 MP"):
        decode_image(path, max_pixels=80_000_000)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_gray_photos_deeper_than_8_bits_keep_their_picture(tmp_path, bus_jpg, mode):
    """A 16-bit PNG (or a 32-bit TIFF) used to reach the detector clipped to white."""
    gray = np.asarray(Image.open(bus_jpg).convert("L"))
    deep = {"I;16": gray.astype(np.uint16) * 257, "I": gray.astype(np.int32) * 257, "F": gray.astype(np.float32) / 255}[mode]
    path = tmp_path / ("bus.png" if mode == "I;16" else "bus.tiff")
    Image.fromarray(deep).save(path)
    assert Image.open(path).mode == mode
    image = read_image(path)
    assert image.shape == (*gray.shape, 3) and image.dtype == np.uint8
    expected = gray if mode == "I;16" else (gray - int(gray.min())) * (255.0 / (int(gray.max()) - int(gray.min())))
    assert np.abs(image[..., 1].astype(float) - expected).max() <= 1.0
