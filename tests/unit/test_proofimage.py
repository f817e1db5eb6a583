"""Proof images made safe: identified from their bytes, bounded, re-encoded without metadata."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tracker.services.proofimage import ProofRefused, clean, decode_base64


def jpeg(size: tuple[int, int], orientation: int | None = None) -> bytes:
    image = Image.new("RGB", size, (200, 10, 10))
    image.paste((10, 10, 200), (0, 0, size[0] // 2, size[1] // 4))  # a marker, top left
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 8.0, 13.0)
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_metadata_is_gone_and_the_photo_is_upright() -> None:
    # Orientation 6: the camera held sideways; the stored image is turned as shown.
    raw = jpeg((400, 200), orientation=6)
    assert b"SecretCam" in raw
    stored = clean(raw, "photo", "proof.photo", 10_000_000)
    assert stored.media_type == "image/jpeg"
    assert b"SecretCam" not in stored.data and b"Exif" not in stored.data
    assert (stored.width, stored.height) == (200, 400)
    with Image.open(io.BytesIO(stored.data)) as img:
        assert not img.getexif() and img.size == (200, 400)


def test_big_photos_are_made_smaller() -> None:
    stored = clean(jpeg((4000, 3000)), "photo", "p", 40_000_000)
    assert max(stored.width, stored.height) == 2048


def test_signatures_stay_png_with_transparency() -> None:
    image = Image.new("RGBA", (100, 40), (0, 0, 0, 0))
    image.putpixel((5, 5), (0, 0, 0, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    stored = clean(out.getvalue(), "signature", "s", 1_000_000)
    assert stored.media_type == "image/png"
    with Image.open(io.BytesIO(stored.data)) as img:
        corner = img.getpixel((0, 0))
        assert img.mode == "RGBA" and isinstance(corner, tuple) and corner[3] == 0


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GIF89a" + b"\x00" * 50, 415),
        (b"%PDF-1.7 not an image", 415),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, 415),  # a JPEG header, nothing after it
    ],
)
def test_what_is_not_an_accepted_image_is_refused(data: bytes, status: int) -> None:
    with pytest.raises(ProofRefused) as refused:
        clean(data, "photo", "proof.photo", 1_000_000)
    assert refused.value.status == status and "proof.photo" in str(refused.value)


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    out = io.BytesIO()
    Image.new("1", (6000, 6000)).save(out, "PNG")
    assert len(out.getvalue()) < 100_000
    with pytest.raises(ProofRefused) as refused:
        clean(out.getvalue(), "photo", "p", 10_000_000)
    assert refused.value.status == 413 and "6000×6000" in str(refused.value)


def test_base64_limits_and_data_urls() -> None:
    payload = base64.b64encode(b"x" * 100).decode()
    assert decode_base64(f"data:image/png;base64,{payload}", "w", 100) == b"x" * 100
    with pytest.raises(ProofRefused) as big:
        decode_base64(payload, "w", 99)
    assert big.value.status == 413
    with pytest.raises(ProofRefused) as bad:
        decode_base64("not base64!", "w", 100)
    assert bad.value.status == 400
