"""Image loading that always yields an upright 8-bit RGB picture, or a clear reason why not.

Photos arrive from iNaturalist, NABirds, Wikimedia and user folders in every mode Pillow
knows: CMYK JPEGs, 16-bit greyscale PNGs, palette GIFs with transparency, RGBA PNGs,
phone photos with an EXIF rotation. A naive ``convert("RGB")`` gets several of these wrong
(16-bit values clip to white, transparent pixels show arbitrary colours), so each mode is
converted explicitly here.

Reasons raised as :class:`~birdbridge.errors.BadInputError`:

``missing``     the path does not exist
``unreadable``  not an image, unsupported format, or a corrupt header
``truncated``   the header is valid but the pixel data ends early or is corrupt
``too_large``   more than ``max_pixels`` (decompression bombs: tiny files, huge sizes)
``too_small``   a side shorter than ``min_side`` pixels (1×1 tracking pixels, icons)
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadInputError

# 64 MP: above any camera photo in the datasets we use (iNat originals are ≤ 2048 px),
# and below Pillow's own bomb limit (~179 MP), so our check fires first with our reason.
MAX_PIXELS = 64_000_000
MIN_SIDE = 8
# Transparent pixels are composited onto white, as browsers and iNat thumbnails show them.
_BACKGROUND = (255, 255, 255)


def _open(path: str | Path) -> Image.Image:
    p = Path(path)
    if not p.exists():
        raise BadInputError("missing", p)
    if not p.is_file():
        raise BadInputError("unreadable", p, "not a regular file")
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between 1× and 2× its limit; treat both as a bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(p)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadInputError("too_large", p, str(err).split(",")[0]) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadInputError("unreadable", p, str(err) or type(err).__name__) from None


def image_info(path: str | Path) -> dict:
    """Header facts without decoding pixels: width, height, mode, format, n_frames."""
    with _open(path) as im:
        return {
            "width": int(im.width),
            "height": int(im.height),
            "mode": im.mode,
            "format": im.format or "",
            "n_frames": int(getattr(im, "n_frames", 1)),
        }


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16/32-bit integer greyscale: scale to 8 bits instead of clipping at 255.
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        g = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0  # [0, 1] floats vs 0–255 floats
        g = np.clip(np.nan_to_num(a) * scale + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    # CMYK (Pillow undoes Adobe's inverted CMYK on decode), YCbCr, LAB, L, 1, HSV.
    return im.convert("RGB")


def load_image(
    path: str | Path,
    *,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
    exif_transpose: bool = True,
) -> Image.Image:
    """Decode ``path`` fully into an upright RGB :class:`PIL.Image.Image` (8 bits per channel).

    Sizes are checked from the header before any pixel is decoded. Animated images give
    their first frame. EXIF orientation is applied (phone photos are stored sideways).
    """
    p = Path(path)
    src = _open(p)
    try:
        w, h = src.size
        if w * h > max_pixels:
            raise BadInputError("too_large", p, f"{w}x{h} > {max_pixels} pixels")
        if min(w, h) < min_side:
            raise BadInputError("too_small", p, f"{w}x{h}, a side < {min_side} px")
        try:
            src.load()
        except (OSError, EOFError, SyntaxError, ValueError) as err:
            raise BadInputError("truncated", p, str(err) or type(err).__name__) from None
        im = src
        if exif_transpose:
            try:
                im = ImageOps.exif_transpose(src)
            except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
                im = src
        out = _to_rgb(im)
        # The opened file is closed below, which invalidates its pixels: never return it.
        return out.copy() if out is src else out
    finally:
        src.close()
