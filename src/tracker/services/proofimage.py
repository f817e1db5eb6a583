"""Proof images made safe to keep: type checked from the bytes, size limited, re-encoded.

What the client says an upload is counts for nothing: Pillow identifies the bytes, and only
JPEG, PNG and WebP are taken. The pixel count is checked from the header before anything
is decoded (a small file can claim a huge image), then the image is decoded, turned upright
by its EXIF orientation and encoded again from its pixels alone, so no metadata (EXIF, GPS
position, camera serial, XMP, ICC comments) survives. Photos become JPEG, at most 2048 px
on their long side; signatures become PNG.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from tracker.store.proofs import Image as StoredImage

ACCEPTED = frozenset({"JPEG", "PNG", "WEBP"})
MAX_SIDE = 2048
_DATA_URL = re.compile(r"data:[A-Za-z0-9.+/-]+;base64,", re.ASCII)


class ProofRefused(ValueError):
    """An upload that is not taken; `status` is the HTTP answer (413 too big, 415 not an
    image of an accepted type, 400 malformed)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def decode_base64(text: object, where: str, max_bytes: int) -> bytes:
    """The bytes of a base64 string (optionally a `data:` URL); 413 past `max_bytes`."""
    if not isinstance(text, str) or not text:
        raise ProofRefused(400, "invalid_request", f"{where}: a base64 string (or data: URL)")
    match = _DATA_URL.match(text)
    if match:
        text = text[match.end() :]
    # Checked on the text first: decoding a huge string just to refuse it would waste memory.
    if len(text) * 3 // 4 > max_bytes + 3:
        raise ProofRefused(
            413, "proof_too_large", f"{where}: larger than the limit, at most {max_bytes} bytes"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProofRefused(400, "invalid_request", f"{where}: not valid base64") from exc
    if len(data) > max_bytes:
        raise ProofRefused(
            413, "proof_too_large", f"{where}: {len(data)} bytes, at most {max_bytes}"
        )
    return data


def clean(data: bytes, kind: str, where: str, max_pixels: int) -> StoredImage:
    """The image re-encoded without metadata, or ProofRefused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            fmt = probe.format
            width, height = probe.size
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
    ) as exc:
        raise ProofRefused(
            415, "unsupported_image", f"{where}: not a JPEG, PNG or WebP image"
        ) from exc
    if fmt not in ACCEPTED:
        raise ProofRefused(
            415, "unsupported_image", f"{where}: {fmt} is not accepted (JPEG, PNG or WebP)"
        )
    if width * height > max_pixels:
        raise ProofRefused(
            413, "proof_too_large", f"{where}: {width}×{height} pixels, at most {max_pixels}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            opened.load()
            image: Image.Image = ImageOps.exif_transpose(opened)
    except (
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise ProofRefused(415, "unsupported_image", f"{where}: the image is damaged") from exc
    out = io.BytesIO()
    if kind == "signature":
        # A drawn signature: keep transparency, lossless.
        image = image.convert("RGBA")
        image.save(out, "PNG")
        media_type = "image/png"
    else:
        if image.mode != "RGB":
            background = Image.new("RGB", image.size, "white")
            rgba = image.convert("RGBA")
            background.paste(rgba, mask=rgba.getchannel("A"))
            image = background
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        image.save(out, "JPEG", quality=85)
        media_type = "image/jpeg"
    return StoredImage(kind, media_type, out.getvalue(), image.width, image.height)
