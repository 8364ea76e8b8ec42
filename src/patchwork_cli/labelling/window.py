"""What both labelling windows share: keys taken over from matplotlib, a right-hand panel of
text lines, a ticking status line, the session ended with the window, and the picture artists.

UI only: the session (labelling/session.py) holds the queue, the undo stack and the grid's
pages, and writes the journal; the single-image window (labelling/image_window.py) and the
grid (labelling/grid_window.py) draw it with matplotlib and turn key presses into session
calls, and labelling/display.py opens one of them. Every artist is made once: the next image
or page replaces the old one's pixels and text in place, so a key costs one render of the
figure, not a rebuild of it.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backend_bases import key_press_handler
from matplotlib.patches import Rectangle
from matplotlib.transforms import offset_copy

from patchwork_cli.labelling.drawcache import add_image, add_text
from patchwork_cli.labelling.session import LabelSession, Picture

VALUE_COLOUR = {None: "0.55", 1: "#1a7f37", 0: "#c62828"}
FLAG_COLOUR = {True: "#b35900", False: "0.55"}
NOTICE_COLOUR = "#b35900"
NAME_WIDTH = 14
PANEL_WIDTH = 30  # characters of 13-point monospace that fit beside the image
UNDO_KEYS = ("u", "ctrl+z")
STATUS_SECONDS = 1  # how often the status line's clock moves on


def equalise(pixels: np.ndarray) -> np.ndarray:
    """Histogram equalisation with one lookup table for all channels, so grey stays grey
    and hues keep their order; a flat image is returned as it is."""
    counts = np.bincount(pixels.ravel(), minlength=256)
    cdf = counts.cumsum()
    lowest = cdf[np.flatnonzero(counts)[0]]
    if cdf[-1] == lowest:
        return pixels
    table = np.round((cdf - lowest) / (cdf[-1] - lowest) * 255).clip(0, 255).astype(np.uint8)
    return table[pixels]


def status_text(session: LabelSession, shown: str = "image") -> str:
    pace = session.pace()
    return f"{pace.labelled} labelled  {pace.per_minute:.1f}/min  {pace.on_image:.0f} s on this {shown}"


class Window:
    """What both windows share: keys taken over from matplotlib, the session ended with the
    window, a right-hand panel of text lines repainted on its own, and a ticking status line."""

    _shown = "image"  # what the status line's seconds are on

    def __init__(self, session: LabelSession, figure, title: str):
        self.session = session
        self.figure = figure
        self.notice = ""
        self._panel = figure.add_axes((0.70, 0.02, 0.29, 0.96))
        self._panel.set_axis_off()
        # an opaque ground, so that repainting the panel alone covers what it showed before
        self._panel.add_patch(Rectangle((0, 0), 1, 1, transform=self._panel.transAxes, color=figure.get_facecolor()))
        # bottom-aligned, so that its descenders stay on the panel's ground and are repainted with it
        self._status = add_text(
            self._panel,
            0,
            0.002,
            "",
            transform=self._panel.transAxes,
            va="bottom",
            family="monospace",
            fontsize=10,
            color="0.3",
        )
        canvas = figure.canvas
        # matplotlib's own keys (h = home, left = back, q = quit, ...) would fire along with
        # ours: take key presses over, and pass on only the keys we do not use (o zoom, p pan...).
        manager = getattr(canvas, "manager", None)
        if manager is not None and manager.key_press_handler_id is not None:
            canvas.mpl_disconnect(manager.key_press_handler_id)
            manager.key_press_handler_id = None
            manager.set_window_title(title)
        # matplotlib holds bound methods weakly; a lambda keeps the window alive as long as its figure.
        canvas.mpl_connect("key_press_event", lambda event: self.on_key(event))
        canvas.mpl_connect("close_event", lambda event: self._end())
        self._status_timer = canvas.new_timer(interval=STATUS_SECONDS * 1000)
        self._status_timer.add_callback(lambda: self._tick())
        self._status_timer.start()
        self._status.set_text(status_text(session, self._shown))

    def on_key(self, event) -> None:
        action = self._actions().get(event.key)
        if action is None:
            key_press_handler(event)
            return
        self.notice = ""
        action()
        if not self.session.finished:
            self.refresh()

    def _actions(self) -> dict:
        raise NotImplementedError

    def refresh(self) -> None:
        """Show the session as it now is: the picture(s) only when they changed, then the panel."""
        pictures_changed = self._show_pictures()
        self._show_panel()
        self._paint(pictures_changed)

    def _paint(self, pictures_changed: bool) -> None:
        if pictures_changed or not self.figure.canvas.supports_blit:
            self.figure.canvas.draw_idle()
        else:  # only the panel changed: repaint just it, instead of re-rendering the picture(s)
            self.figure.draw_artist(self._panel)
            self.figure.canvas.blit(self._panel.bbox)

    def _show_pictures(self) -> bool:
        raise NotImplementedError

    def _show_panel(self) -> None:
        raise NotImplementedError

    def _tick(self) -> None:
        # The status line moves on with the clock, not with the keys: a line rendered anew on
        # every key would cost the next image a quarter of its time on screen.
        if not self.session.finished:
            self._status.set_text(status_text(self.session, self._shown))
            self._paint(pictures_changed=False)

    def _end(self) -> None:
        self._status_timer.stop()
        self.session.finish()

    def close(self) -> None:
        """End the session (compacting the journal) and close the window."""
        import matplotlib.pyplot as plt

        self._end()
        plt.close(self.figure)


class PictureArtists:
    """An image's artists in one axes: its pixels, or a hatched placeholder saying why there are none."""

    def __init__(self, axes, problem_format: str, fontsize: float):
        self.axes = axes
        self.problem_format = problem_format
        self.image = add_image(axes, np.zeros((1, 1, 4), np.uint8))
        self.placeholder = axes.add_patch(
            Rectangle((0, 0), 1, 1, transform=axes.transAxes, facecolor="0.9", edgecolor="0.6", hatch="//")
        )
        self.problem = add_text(
            axes, 0.5, 0.5, "", transform=axes.transAxes, ha="center", va="center", fontsize=fontsize, wrap=True
        )

    def show(self, picture: Picture, equalised: bool, new_image: bool) -> None:
        """Put `picture` in place of the one shown; a new image is fitted to the axes, the same
        one keeps the view (a zoom holds)."""
        readable = picture.pixels is not None
        self.image.set_visible(readable)
        self.placeholder.set_visible(not readable)
        self.problem.set_visible(not readable)
        if not readable:
            self.problem.set_text(self.problem_format.format(picture.problem))
            return
        if equalised:
            pixels = equalise(picture.pixels)
            self.image.set_data(np.dstack((pixels, picture.rgba[..., 3])))
        else:
            pixels = picture.rgba
            self.image.set_data(pixels)
        if new_image:
            height, width = pixels.shape[:2]
            self.image.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))
            self.axes.set_xlim(-0.5, width - 0.5)
            self.axes.set_ylim(height - 0.5, -0.5)


class TextLines:
    """Text lines stacked down a panel from its top, spaced in points so that they keep
    their size and spacing however the window is resized."""

    def __init__(self, axes):
        self.axes = axes
        self.depth = 0.0  # points below the top of the panel

    def add(self, text: str = "", size: float = 12, colour: str = "black", weight: str = "normal"):
        """A new line; returns its text artist, to update in place."""
        self.depth += size * 1.5
        place = offset_copy(self.axes.transAxes, self.axes.figure, y=-self.depth, units="points")
        properties = {"family": "monospace", "fontsize": size, "color": colour, "weight": weight}
        return add_text(self.axes, 0, 1, text, transform=place, **properties)

    def gap(self) -> None:
        self.depth += 10


def shorten(text: str, width: int = NAME_WIDTH - 1) -> str:
    """`text` cut to `width` characters in the middle, so its end (a file's number, a suffix) shows."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep - keep // 2] + "~" + text[len(text) - keep // 2 :]
