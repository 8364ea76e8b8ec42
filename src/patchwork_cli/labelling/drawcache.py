"""Text and images for the labelling windows, drawn from bitmaps made once.

Agg renders every glyph of every text, and resamples every image, on every draw: the
labelling panel's dozen lines cost more to draw than the image beside them, and the image
more than a key's journal write. Most lines repeat from image to image
("3   bird          -      -"), so each distinct line is rendered once, at its sub-pixel
offset, into a small bitmap that later draws only paste; and an image in full view is
resized once to its size on screen and pasted. Zoomed or panned images, and
other renderers (PDF, SVG, a savefig to a vector format), draw as matplotlib does.
"""

from __future__ import annotations

import collections
import math

import numpy as np
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.colors import to_rgba
from matplotlib.image import AxesImage
from matplotlib.text import Text
from PIL import Image

BITMAPS_KEPT = 4096  # distinct lines kept (a few hundred bytes to a few kB each)
PAD = 4  # pixels around a line's box: hinting and antialiasing reach past it


class CachedText(Text):
    """A Text whose glyphs are pasted from cached bitmaps on an Agg canvas.

    A text drawn again unchanged, at the same place, skips matplotlib's layout too and pastes
    what it pasted last time (its box, if it has one, stays where it was)."""

    _last: tuple[tuple, list] | None = None  # (what and where it was drawn, its pastes)

    def draw(self, renderer):
        if not isinstance(renderer, RendererAgg) or self.get_path_effects() or self.get_usetex():
            return super().draw(renderer)
        stand_in = _bitmap_renderer(renderer)
        drawn = self._drawn_as(renderer)
        if self._last is not None and self._last[0] == drawn:
            self._paste_again(renderer, self._last[1])
            return
        stand_in.pastes = []
        super().draw(stand_in)
        self._last, stand_in.pastes = (drawn, stand_in.pastes), None

    def _drawn_as(self, renderer) -> tuple:
        """Everything that decides the text's pixels and place on this canvas."""
        place = tuple(np.round(self.get_transform().transform(self.get_unitless_position()) * 64))
        properties = (self.get_text(), to_rgba(self.get_color()), hash(self.get_fontproperties()), self.get_visible())
        layout = (self.get_rotation(), self.get_ha(), self.get_va(), self.get_wrap())
        return (id(renderer), renderer.width, renderer.height, renderer.dpi, place, properties, layout)

    def _paste_again(self, renderer, pastes: list) -> None:
        if not self.get_visible() or not self.get_text():
            return
        if self.get_bbox_patch() is not None:
            self.get_bbox_patch().draw(renderer)
        gc = renderer.new_gc()
        self._set_gc_clip(gc)
        for left, bottom, bitmap in pastes:
            renderer.draw_image(gc, left, bottom, bitmap)
        gc.restore()
        self.stale = False


def add_text(axes, x: float, y: float, text: str, **properties) -> CachedText:
    """axes.text() with a CachedText (transform: axes.transData unless given)."""
    artist = CachedText(x, y, text, **properties)
    if "transform" not in properties:
        artist.set_transform(axes.transData)
    axes.add_artist(artist)
    return artist


class PastedImage(AxesImage):
    """An AxesImage of RGBA uint8 pixels that, in full view on an Agg canvas, pastes a copy
    resized to its pixels on screen (nearest when enlarging, area-averaged when shrinking)."""

    def __init__(self, axes, **properties):
        super().__init__(axes, **properties)
        self._resized: tuple[tuple, np.ndarray] | None = None  # (size and filter, rows bottom first)

    def set_data(self, A):
        super().set_data(A)
        self._resized = None

    def draw(self, renderer):
        place = self._place_on_screen() if isinstance(renderer, RendererAgg) else None
        if place is None or not self.get_visible():
            return super().draw(renderer)
        left, bottom, width, height = place
        gc = renderer.new_gc()
        self._set_gc_clip(gc)
        gc.set_alpha(self._get_scalar_alpha())
        renderer.draw_image(gc, left, bottom, self._resized_to(width, height))
        gc.restore()
        self.stale = False

    def _place_on_screen(self) -> tuple[int, int, int, int] | None:
        """(left, bottom, width, height) in canvas pixels of the whole image; None when the view
        shows only part of it (a zoom or a pan)."""
        left, right, bottom, top = self.get_extent()
        if (tuple(self.axes.get_xlim()), tuple(self.axes.get_ylim())) != ((left, right), (bottom, top)):
            return None
        (x0, y0), (x1, y1) = np.round(self.axes.transData.transform([(left, bottom), (right, top)]))
        return int(x0), int(y0), int(x1 - x0), int(y1 - y0)

    def _resized_to(self, width: int, height: int) -> np.ndarray:
        pixels = np.asarray(self.get_array())
        enlarged = width >= pixels.shape[1]
        key = (width, height, enlarged)
        if self._resized is None or self._resized[0] != key:
            width, height = max(width, 1), max(height, 1)
            if enlarged:  # two takes along an axis: 30 times faster than a 2-D index, 8 than Pillow
                rows = (np.arange(height - 1, -1, -1) * pixels.shape[0]) // height  # bottom first, for draw_image
                columns = (np.arange(width) * pixels.shape[1]) // width
                bottom_first = np.take(np.take(pixels, rows, axis=0), columns, axis=1)
            else:
                resized = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BOX))
                bottom_first = np.ascontiguousarray(resized[::-1])
            self._resized = (key, bottom_first)
        return self._resized[1]


def add_image(axes, pixels: np.ndarray) -> PastedImage:
    """axes.imshow(pixels) with a PastedImage (pixels: RGBA uint8), clipped to the axes."""
    image = PastedImage(axes)
    image.set_data(pixels)
    image.set_clip_path(axes.patch)
    axes.set_aspect("equal")
    axes.add_image(image)
    return image


class _BitmapRenderer:
    """Stands in for an Agg renderer while a text draws: its draw_text pastes a bitmap."""

    def __init__(self, renderer: RendererAgg):
        self._renderer = renderer
        self._bitmaps: collections.OrderedDict = collections.OrderedDict()
        self.pastes: list | None = None  # while a CachedText draws: its (left, bottom, bitmap)s

    def __getattr__(self, name):
        return getattr(self._renderer, name)

    def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
        if ismath or angle or gc.get_alpha() != 1:
            return self._renderer.draw_text(gc, x, y, s, prop, angle, ismath, mtext)
        # y is downwards from the top of the canvas, at the text's baseline
        column, row = math.floor(x), math.floor(y)
        fraction = (round((x - column) * 64), round((y - row) * 64))  # FreeType places glyphs in 1/64 pixels
        key = (s, hash(prop), tuple(gc.get_rgb()), gc.get_antialiased(), fraction)
        bitmap, above = self._bitmap(key, gc, x - column, y - row, s, prop, mtext)
        paste = (column - PAD, self._renderer.height - (row - above) - bitmap.shape[0], bitmap)
        self._renderer.draw_image(gc, *paste)
        if self.pastes is not None:
            self.pastes.append(paste)

    def _bitmap(self, key, gc, x_fraction, y_fraction, s, prop, mtext) -> tuple[np.ndarray, int]:
        """The line's bitmap and how many of its rows lie above the baseline's row."""
        if key in self._bitmaps:
            self._bitmaps.move_to_end(key)
            return self._bitmaps[key]
        width, height = self._line_size(s, prop, mtext)
        above = PAD + math.ceil(height)  # the baseline's row: a line's height above and below it is room enough
        scratch = RendererAgg(math.ceil(width) + 2 * PAD, above + math.ceil(height) + PAD, self._renderer.dpi)
        # the text's clip is in the canvas's coordinates: it applies when the bitmap is pasted
        unclipped = scratch.new_gc()
        unclipped.copy_properties(gc)
        unclipped.set_clip_rectangle(None)
        unclipped.set_clip_path(None)
        scratch.draw_text(unclipped, PAD + x_fraction, above + y_fraction, s, prop, 0, False, mtext)
        unclipped.restore()
        # draw_image takes rows bottom first
        entry = (np.asarray(scratch.buffer_rgba())[::-1].copy(), above)
        self._bitmaps[key] = entry
        if len(self._bitmaps) > BITMAPS_KEPT:
            self._bitmaps.popitem(last=False)
        return entry

    def _line_size(self, s, prop, mtext) -> tuple[float, float]:
        """Width and height in pixels of a line: a one-line text's own layout, which matplotlib
        has just made and cached; else measured (a line of a multi-line text)."""
        if mtext is not None:
            box = mtext.get_window_extent(self)
            return box.width, box.height
        width, height, _ = self._renderer.get_text_width_height_descent(s, prop, False)
        return width, height


_renderers: dict[int, _BitmapRenderer] = {}


def _bitmap_renderer(renderer: RendererAgg) -> _BitmapRenderer:
    """One stand-in per Agg renderer (a resized canvas gets a new renderer, whose text sizes
    in pixels may differ), so that matplotlib's text-layout cache keeps working."""
    stand_in = _renderers.get(id(renderer))
    if stand_in is None or stand_in._renderer is not renderer:
        _renderers.clear()  # the old renderer's bitmaps are for its canvas size and dpi
        stand_in = _renderers[id(renderer)] = _BitmapRenderer(renderer)
    return stand_in
