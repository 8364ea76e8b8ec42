"""load_image on real files written with Pillow: formats, modes, EXIF orientation, resizing and failures."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from patchwork_cli.util import images
from patchwork_cli.util.images import ImageError, load_image

RED = (220, 20, 40)
BLUE = (30, 60, 210)
GREEN = (40, 200, 60)
YELLOW = (240, 220, 30)
WHITE = (255, 255, 255)

ORIENTATION = 0x0112  # the EXIF tag


# --- helpers: writing test images ---


def two_halves(width: int, height: int, left=RED, right=BLUE) -> Image.Image:
    """An RGB image whose left half is `left` and right half is `right`."""
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:, : width // 2] = left
    pixels[:, width // 2 :] = right
    return Image.fromarray(pixels)


def quadrants(width: int, height: int) -> Image.Image:
    """An RGB image with four distinct quadrants: RED BLUE over GREEN YELLOW."""
    pixels = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    pixels[:h, :w], pixels[:h, w:], pixels[h:, :w], pixels[h:, w:] = RED, BLUE, GREEN, YELLOW
    return Image.fromarray(pixels)


def save(image: Image.Image, path: Path, **options) -> str:
    image.save(path, **options)
    return str(path)


def save_with_orientation(image: Image.Image, path: Path, orientation: int, **options) -> str:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return save(image, path, exif=exif, **options)


def truncated_copy(path: str, tmp_path: Path) -> str:
    """A copy of the file at `path` cut in half."""
    data = Path(path).read_bytes()
    cut = tmp_path / ("truncated" + Path(path).suffix)
    cut.write_bytes(data[: len(data) // 2])
    return str(cut)


def png_claiming_size(path: Path, width: int, height: int) -> str:
    """A tiny real PNG whose IHDR is rewritten to claim width x height pixels (valid CRC, no matching data)."""
    save(Image.new("1", (1, 1)), path)
    data = bytearray(path.read_bytes())
    # signature (8) | IHDR length (4) | b"IHDR" (4) | width, height (4 + 4) | ... | CRC of type + data (4)
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return str(path)


def noise(width: int, height: int) -> Image.Image:
    """Incompressible content, so that half a file is really missing half the image data."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


# --- helpers: checking results ---


def assert_image(pixels: np.ndarray, shape: tuple[int, ...]) -> None:
    assert pixels.dtype == np.uint8
    assert pixels.shape == shape


def assert_close(pixels: np.ndarray, colour, tolerance: int) -> None:
    """Every pixel of `pixels` is within `tolerance` of `colour` in every channel."""
    difference = np.abs(pixels.astype(int) - np.asarray(colour, int))
    assert difference.max() <= tolerance, f"off by up to {difference.max()} from {colour}"


def assert_halves(pixels: np.ndarray, left, right, tolerance: int = 0, margin: int = 0) -> None:
    """Left and right halves have the given colours, ignoring `margin` columns either side of the boundary."""
    middle = pixels.shape[1] // 2
    assert_close(pixels[:, : middle - margin], left, tolerance)
    assert_close(pixels[:, middle + margin :], right, tolerance)


# --- formats ---


@pytest.mark.parametrize(
    ("suffix", "options", "tolerance"),
    [
        (".jpg", {"quality": 95}, 8),
        (".png", {}, 0),
        (".tif", {}, 0),
        (".bmp", {}, 0),
        (".gif", {}, 0),
        (".webp", {"quality": 90}, 8),
        (".webp", {"lossless": True}, 0),
    ],
    ids=["jpeg", "png", "tiff", "bmp", "gif", "webp-lossy", "webp-lossless"],
)
def test_each_format_decodes_to_its_colours(tmp_path, suffix, options, tolerance):
    path = save(two_halves(48, 32), tmp_path / f"image{suffix}", **options)
    pixels = load_image(path)
    assert_image(pixels, (32, 48, 3))
    # lossy codecs blur the edge between the halves (8x8 blocks, subsampled chroma)
    assert_halves(pixels, RED, BLUE, tolerance, margin=8 if tolerance else 0)


# --- modes ---


GREYS = np.array([[0, 77, 200, 255]], np.uint8)


def test_greyscale_gives_three_identical_channels(tmp_path):
    pixels = load_image(save(Image.fromarray(GREYS), tmp_path / "grey.png"))
    assert_image(pixels, (1, 4, 3))
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], GREYS)


def test_greyscale_with_one_channel(tmp_path):
    pixels = load_image(save(Image.fromarray(GREYS), tmp_path / "grey.png"), channels=1)
    assert_image(pixels, (1, 4, 1))
    np.testing.assert_array_equal(pixels[..., 0], GREYS)


def test_colour_with_one_channel_is_luminance(tmp_path):
    pixels = load_image(save(two_halves(8, 2, left=(255, 0, 0), right=(0, 0, 255)), tmp_path / "c.png"), channels=1)
    assert_image(pixels, (2, 8, 1))
    # ITU-R 601-2 luma, as Pillow's convert("L"): 0.299 R + 0.587 G + 0.114 B
    assert_halves(pixels, [76], [29], tolerance=1)


def test_bilevel_gives_black_and_white(tmp_path):
    image = Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1")
    pixels = load_image(save(image, tmp_path / "bilevel.png"))
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 255, 0])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_greyscale_is_scaled_over_its_full_range(tmp_path, suffix, channels):
    image = Image.fromarray(np.array([[0, 32768, 65535]], np.uint16))
    assert image.mode == "I;16"
    path = save(image, tmp_path / f"deep{suffix}")
    assert Image.open(path).mode.startswith("I;16")  # really 16 bits on disk
    pixels = load_image(path, channels=channels)
    assert_image(pixels, (1, 3, channels))
    for channel in range(channels):
        np.testing.assert_array_equal(pixels[0, :, channel], [0, 128, 255])


def test_float_greyscale_is_scaled_over_zero_to_one(tmp_path):
    path = save(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), tmp_path / "float.tif")
    assert Image.open(path).mode == "F"
    np.testing.assert_array_equal(load_image(path)[0, :, 0], [0, 128, 255])


def palette_image() -> Image.Image:
    """Indices 0, 1, 2 over a RED, BLUE, GREEN palette."""
    image = Image.fromarray(np.array([[0, 1, 2, 1]], np.uint8), mode="P")
    image.putpalette([*RED, *BLUE, *GREEN])
    return image


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_gives_palette_colours(tmp_path, suffix):
    pixels = load_image(save(palette_image(), tmp_path / f"palette{suffix}"))
    assert_image(pixels, (1, 4, 3))
    np.testing.assert_array_equal(pixels[0], [RED, BLUE, GREEN, BLUE])


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_a_transparent_index_shows_white_there(tmp_path, suffix):
    pixels = load_image(save(palette_image(), tmp_path / f"palette{suffix}", transparency=1))
    np.testing.assert_array_equal(pixels[0], [RED, WHITE, GREEN, WHITE])


def test_rgba_composites_over_white(tmp_path):
    rgba = np.array([[[*RED, 255], [*GREEN, 0], [0, 0, 0, 128]]], np.uint8)
    pixels = load_image(save(Image.fromarray(rgba), tmp_path / "rgba.png"))
    assert_image(pixels, (1, 3, 3))
    np.testing.assert_array_equal(pixels[0, :2], [RED, WHITE])  # opaque keeps its colour; transparent is white
    assert_close(pixels[0, 2], (127, 127, 127), tolerance=1)  # half-transparent black is mid grey


@pytest.mark.parametrize(("channels", "expected"), [(3, [[50] * 3, WHITE]), (1, [[50], [255]])])
def test_grey_with_alpha_composites_over_white(tmp_path, channels, expected):
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], np.uint8), mode="LA")
    pixels = load_image(save(la, tmp_path / "la.png"), channels=channels)
    assert_image(pixels, (1, 2, channels))
    np.testing.assert_array_equal(pixels[0], expected)


def test_rgb_with_a_transparent_colour_shows_white_there(tmp_path):
    path = save(two_halves(4, 1), tmp_path / "keyed.png", transparency=BLUE)
    np.testing.assert_array_equal(load_image(path)[0], [RED, RED, WHITE, WHITE])


@pytest.mark.parametrize(
    ("grey", "visible"),
    [(np.array([[0, 100]], np.uint8), 100), (np.array([[0, 32768]], np.uint16), 128)],
    ids=["8-bit", "16-bit"],
)
def test_greyscale_with_a_transparent_grey_shows_white_there(tmp_path, grey, visible):
    """A transparent grey value (PNG tRNS, in 8-bit "L" and 16-bit "I;16") is composited over white."""
    path = save(Image.fromarray(grey), tmp_path / "keyed-grey.png", transparency=0)
    assert Image.open(path).info["transparency"] == 0
    np.testing.assert_array_equal(load_image(path)[0], [WHITE, [visible] * 3])


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    cmyk = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red
    cmyk.paste((255, 0, 0, 0), (16, 0, 32, 16))  # cyan
    path = save(cmyk, tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    pixels = load_image(path)
    assert_image(pixels, (16, 32, 3))
    assert_halves(pixels, (255, 0, 0), (0, 255, 255), tolerance=8, margin=8)


def test_multi_frame_gif_gives_its_first_frame(tmp_path):
    first, *rest = [Image.new("RGB", (8, 6), colour) for colour in (RED, GREEN, BLUE)]
    path = save(first, tmp_path / "animated.gif", save_all=True, append_images=rest, duration=100)
    assert Image.open(path).n_frames == 3
    pixels = load_image(path)
    assert_image(pixels, (6, 8, 3))
    assert_close(pixels, RED, tolerance=0)


# --- EXIF orientation ---

# Where the stored quadrants (RED BLUE over GREEN YELLOW) appear on screen for each EXIF orientation,
# from the spec's meaning: where the stored 0th row and 0th column are displayed.
# 6: row 0 on the right, column 0 at the top ("rotate 90 CW to view"); 8: row 0 on the left, column 0 at the bottom.
DISPLAYED = {
    1: [[RED, BLUE], [GREEN, YELLOW]],  # as stored
    2: [[BLUE, RED], [YELLOW, GREEN]],  # mirrored left-right
    3: [[YELLOW, GREEN], [BLUE, RED]],  # rotated 180
    4: [[GREEN, YELLOW], [RED, BLUE]],  # mirrored top-bottom
    5: [[RED, GREEN], [BLUE, YELLOW]],  # transposed
    6: [[GREEN, RED], [YELLOW, BLUE]],  # rotated 90 clockwise
    7: [[YELLOW, BLUE], [GREEN, RED]],  # transversed
    8: [[BLUE, YELLOW], [RED, GREEN]],  # rotated 90 counter-clockwise
}


def assert_quadrants(pixels: np.ndarray, expected, tolerance: int) -> None:
    """The centre of each quadrant (away from the edges, which a lossy codec blurs) has the expected colour."""
    height, width = pixels.shape[:2]
    for row in range(2):
        for column in range(2):
            y, x = (2 * row + 1) * height // 4, (2 * column + 1) * width // 4
            assert_close(pixels[y - 2 : y + 2, x - 2 : x + 2], expected[row][column], tolerance)


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    path = save_with_orientation(quadrants(80, 40), tmp_path / "oriented.jpg", orientation, quality=95)
    pixels = load_image(path)
    assert_image(pixels, (40, 80, 3) if orientation < 5 else (80, 40, 3))
    assert_quadrants(pixels, DISPLAYED[orientation], tolerance=8)


@pytest.mark.parametrize(("orientation", "top", "bottom"), [(6, RED, BLUE), (8, BLUE, RED)])
def test_sideways_photo_of_two_halves(tmp_path, orientation, top, bottom):
    """40 wide x 20 high, red left and blue right, shot sideways: 20 wide x 40 high on screen."""
    path = save_with_orientation(two_halves(40, 20), tmp_path / "sideways.jpg", orientation, quality=95)
    pixels = load_image(path)
    assert_image(pixels, (40, 20, 3))
    assert_close(pixels[:12], top, tolerance=8)
    assert_close(pixels[-12:], bottom, tolerance=8)


def test_exif_orientation_in_a_png(tmp_path):
    path = save_with_orientation(quadrants(8, 4), tmp_path / "oriented.png", 6)
    expected = np.repeat(np.repeat(np.array(DISPLAYED[6], np.uint8), 4, axis=0), 2, axis=1)
    np.testing.assert_array_equal(load_image(path), expected)


def test_exif_orientation_then_resize(tmp_path):
    path = save_with_orientation(quadrants(800, 400), tmp_path / "big-sideways.jpg", 6, quality=95)
    pixels = load_image(path, size=(60, 30))
    assert_image(pixels, (60, 30, 3))
    assert_quadrants(pixels, DISPLAYED[6], tolerance=8)


# --- resizing ---


@pytest.fixture
def draft_calls(monkeypatch):
    """The (mode, size) of every JpegImageFile.draft call and the (width, height) libjpeg then decodes at,
    to see that the reduced-scale path is taken and at which scale."""
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft

    def draft(self, mode, size):
        result = original(self, mode, size)
        calls.append((mode, size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    return calls


def test_large_jpeg_resizes_exactly_through_draft_mode(tmp_path, draft_calls):
    path = save(two_halves(2000, 1500), tmp_path / "large.jpg", quality=90)
    pixels = load_image(path, size=(100, 300))
    assert draft_calls == [("RGB", (300, 100), (500, 375))]  # (width, height) for Pillow; decoded at 1/4
    assert_image(pixels, (100, 300, 3))  # aspect ratio not kept
    assert_halves(pixels, RED, BLUE, tolerance=8, margin=4)


@pytest.mark.parametrize(
    "stored, decoded",
    [
        ((692, 490), (346, 245)),  # the benchmark's photographs at 224x224: 1/2
        ((1000, 900), (250, 225)),  # 1/4
        ((4032, 3024), (504, 378)),  # a 12-megapixel phone photo: 1/8, the smallest libjpeg offers
        ((447, 600), (447, 600)),  # under twice the target on one side: decoded in full
    ],
)
def test_reduced_scale_decoding_takes_the_smallest_scale_that_keeps_the_target_size(
    tmp_path, draft_calls, stored, decoded
):
    path = save(two_halves(*stored), tmp_path / "photo.jpg", quality=90)
    pixels = load_image(path, size=(224, 224))
    assert draft_calls == [("RGB", (224, 224), decoded)]
    assert_image(pixels, (224, 224, 3))
    assert_halves(pixels, RED, BLUE, tolerance=8, margin=4)


def test_reduced_scale_decoding_is_deterministic_and_near_a_full_decode(tmp_path):
    """The pixels of a 1/2-scale decode differ from a full decode then resize (DCT-domain scaling), but
    by little, and are the same every time."""
    path = save(noise(87, 62).resize((692, 490), Image.BICUBIC), tmp_path / "photo.jpg", quality=90)  # smooth blobs
    reduced = load_image(path, size=(224, 224))
    np.testing.assert_array_equal(load_image(path, size=(224, 224)), reduced)
    full = np.asarray(Image.fromarray(load_image(path)).resize((224, 224), Image.BILINEAR))
    assert np.abs(reduced.astype(int) - full).mean() < 4


def test_no_draft_without_a_size(tmp_path, draft_calls):
    load_image(save(two_halves(64, 32), tmp_path / "small.jpg"))
    assert draft_calls == []


@pytest.mark.parametrize("size", [(10, 20), (100, 50), (48, 64)])
def test_png_resizes_exactly(tmp_path, size):
    pixels = load_image(save(two_halves(64, 48), tmp_path / "image.png"), size=size)
    assert_image(pixels, (*size, 3))
    # bilinear: exact away from the edge between the halves
    assert_halves(pixels, RED, BLUE, margin=max(2, size[1] // 16))


def test_size_equal_to_the_image_leaves_it_unchanged(tmp_path):
    image = noise(16, 12)
    pixels = load_image(save(image, tmp_path / "noise.png"), size=(12, 16))
    np.testing.assert_array_equal(pixels, np.asarray(image))


@pytest.mark.parametrize("channels", [1, 3])
def test_one_pixel_image_resizes(tmp_path, channels):
    path = save(Image.new("RGB", (1, 1), GREEN), tmp_path / "dot.png")
    pixels = load_image(path, size=(5, 7), channels=channels)
    assert_image(pixels, (5, 7, channels))
    assert_close(pixels, GREEN if channels == 3 else load_image(path, channels=1)[0, 0], tolerance=0)


def test_reduced_scale_decoding_respects_exif_orientation(tmp_path):
    """libjpeg's reduced-scale decoding works on the stored (unrotated) image, so for orientations 5-8
    the draft size must be turned too, or a non-square target loses detail along one axis.

    The stored image is 800 wide x 100 high with alternating black/white rows; orientation 6 shows it
    100 wide x 800 high with 1-pixel vertical stripes. size=(50, 100) keeps the 100 columns, so the
    stripes must survive (a wrongly turned draft decodes at 1/2 scale and averages them to grey).
    """
    rows = np.zeros((100, 800), np.uint8)
    rows[::2] = 255
    path = save_with_orientation(Image.fromarray(rows).convert("RGB"), tmp_path / "stripes.jpg", 6, quality=100)
    pixels = load_image(path, size=(50, 100))
    assert_image(pixels, (50, 100, 3))
    # what loading in full and resizing gives: the stripes, intact
    full = load_image(path)
    expected = np.asarray(Image.fromarray(full).resize((100, 50), Image.BILINEAR))
    assert expected[..., 0].std() > 100
    difference = np.abs(pixels.astype(int) - expected).max()
    assert difference <= 16, f"stripes lost (off by up to {difference}): decoded below the target size, then upsampled"


# --- failures ---


def reason(path: str) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(path)
    return str(caught.value)


def test_missing_file(tmp_path):
    assert reason(str(tmp_path / "nowhere.jpg")) == "file not found"


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").touch()
    assert reason(str(tmp_path / "empty.png")).startswith("not an image")


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("these are not the pixels you are looking for\n" * 20)
    assert reason(str(tmp_path / "notes.jpg")).startswith("not an image")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file(tmp_path, suffix):
    path = save(noise(64, 64), tmp_path / f"whole{suffix}")
    load_image(path)  # the whole file is fine
    message = reason(truncated_copy(path, tmp_path))
    assert message.startswith("unreadable: ")
    assert "truncated" in message


def test_directory_is_unreadable(tmp_path):
    assert reason(str(tmp_path)).startswith("unreadable: ")


# Pillow warns (and we refuse) in the band between its limit and twice it; images.py silences that warning
# with a module-level filter, which pytest's per-test warning capture does not keep.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    "pixels",
    [images.MAX_PIXELS + 1, 2 * images.MAX_PIXELS + 1],
    ids=["over-our-limit", "over-pillows-hard-limit"],
)
def test_decompression_bomb_is_refused_before_decoding(tmp_path, pixels):
    # The file holds one pixel of data: had it been decoded, it would fail as "unreadable" (truncated).
    width = 10_000
    path = png_claiming_size(tmp_path / "bomb.png", width, -(-pixels // width))
    assert reason(path).startswith("refused")


def test_pixel_limit_is_inclusive(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    assert load_image(save(Image.new("RGB", (10, 10)), tmp_path / "at.png")).shape == (10, 10, 3)
    message = reason(save(Image.new("RGB", (10, 11)), tmp_path / "over.png"))
    assert message == "refused: 10x11 pixels is over the 100 pixel limit"
