"""Decoding images for the model (and later the viewer): any common file in, a uint8 array out.

Every failure -- unreadable, truncated, zero-byte, not an image, a decompression
bomb -- becomes an ImageError with a short reason, so a million-image run records
it and goes on.
"""

from __future__ import annotations

import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

# We refuse anything above Pillow's own bomb threshold ourselves (before decoding),
# so its warning for the band just below its hard limit is noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_ORIENTATION = 0x0112  # the EXIF tag


class ImageError(Exception):
    """An image that cannot be used; str() is the reason recorded for it."""


def load_image(path: str | BinaryIO, size: tuple[int, int] | None = None, channels: int = 3) -> np.ndarray:
    """The image at `path` (or in an open binary file) as uint8 (height, width, channels), EXIF
    orientation applied.

    `size` (height, width) resizes (bilinear, aspect not kept: the model's input is a
    fixed rectangle). 16-bit images are scaled to 8 bits over their full range, palette
    images expanded, and transparency composited over white.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"refused: {width}x{height} pixels is over the {MAX_PIXELS:,} pixel limit")
            if size is not None and image.format == "JPEG":
                _draft(image, size)
            image.load()
            # No copy that changes nothing: exif_transpose in place (it copies an image it does not
            # turn), no convert() to the mode the image has, the resize before numpy rather than
            # through it. Each cost 0.2-0.3 core-ms on a 640x480 JPEG photograph at 224x224: 1.68
            # core-ms an image with them, 1.34 without, the same pixels (extract decodes every image).
            ImageOps.exif_transpose(image, in_place=True)
            image = _to_channels(image, channels)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            pixels = np.array(image, dtype=np.uint8)  # a writable copy, not a view of Pillow's buffer
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except Image.DecompressionBombError:
        raise ImageError("refused: decompression bomb") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"unreadable: {error}") from None
    return pixels[..., None] if channels == 1 else pixels


def _draft(image: Image.Image, size: tuple[int, int]) -> None:
    """Have libjpeg decode at 1/2, 1/4 or 1/8 scale, the smallest that keeps the image at least
    `size` (Pillow's draft; 1/2 for a 640x480 photograph at 224x224): it scales in the DCT, and the
    resize after it has fewer pixels to read. Measured on the 640x480 JPEG photographs of
    benchmarks/extract_bench.py at 224x224: 1.45 core-ms an image against 1.96 for a full decode.
    The pixels are not a full decode's resized (mean difference 0.9 of 255; EfficientNet-Lite0's
    pooled features to a cosine of 0.990 at least, 0.998 on average) but they are the same on
    every run and for every runtime, which is what a store needs. libjpeg scales the image as
    stored, before the EXIF rotation, so a quarter-turned image needs the target turned too."""
    turned = image.getexif().get(_ORIENTATION) in (5, 6, 7, 8)
    image.draft("RGB", (size[0], size[1]) if turned else (size[1], size[0]))


def load_display_image(path: str, max_side: int = 1600) -> np.ndarray:
    """The image at `path` for a person to look at: RGB uint8 like load_image, aspect kept,
    shrunk (never enlarged) to at most `max_side` pixels on its longer side so big photos draw fast."""
    pixels = load_image(path)
    longest = max(pixels.shape[:2])
    if longest <= max_side:
        return pixels
    height, width = (max(1, round(side * max_side / longest)) for side in pixels.shape[:2])
    return _resize(pixels, (height, width))


def _to_channels(image: Image.Image, channels: int) -> Image.Image:
    """`image` in mode L (channels 1) or RGB (channels 3)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _high_bit_depth_to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    mode = "L" if channels == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)


def _high_bit_depth_to_8bit(image: Image.Image) -> Image.Image:
    """An 8-bit grey image ("LA" when a grey value is marked transparent, as 16-bit PNGs may)."""
    values = np.asarray(image)
    grey = Image.fromarray(_to_uint8(values, image.mode))
    transparent = image.info.get("transparency")
    if transparent is None:
        return grey
    grey = grey.convert("LA")
    grey.putalpha(Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8)))
    return grey


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth grey to 8 bits: 16-bit data over 0..65535, float data over 0..1."""
    values = values.astype(np.float64)
    if mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 65535 * 255
    elif mode == "F" and values.max(initial=0) <= 1:
        values = values * 255
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    channels = pixels.shape[2]
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    resized = np.asarray(image.resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)
    return resized[..., None] if channels == 1 else resized
