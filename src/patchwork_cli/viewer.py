"""The labelling window: one image large, its labels beside it, everything on the keyboard.

UI only: the session (labelling.py) holds the queue and writes the journal; this module
draws it with matplotlib and turns key presses into session calls.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backend_bases import key_press_handler
from matplotlib.patches import Rectangle
from matplotlib.transforms import offset_copy

from .errors import PatchworkError
from .labelling import CLASS_KEYS, LabelSession

KEYS_HELP = (
    ("1 .. 9, 0", "class 1 .. 10: unlabelled > yes > no"),
    ("n", "every unlabelled class: no"),
    ("x", "exclude on / off"),
    ("v", "validation on / off"),
    ("right  space  enter", "next image"),
    ("left  backspace", "previous image"),
    ("h", "histogram equalisation on / off"),
    ("o  p  r", "zoom, pan, reset view"),
    ("?", "this help"),
    ("q", "quit (or close the window)"),
)
# Keys that change labels only, not the picture.
LABEL_KEYS = frozenset(CLASS_KEYS + "nxv")
VALUE_TEXT = {None: "-", 1: "yes", 0: "no"}
VALUE_COLOUR = {None: "0.55", 1: "#1a7f37", 0: "#c62828"}
FLAG_COLOUR = {True: "#b35900", False: "0.55"}
NAME_WIDTH = 14
PANEL_WIDTH = 30  # characters of 13-point monospace that fit beside the image


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


class LabelWindow:
    """Draws a LabelSession into a matplotlib figure and edits it from key presses."""

    def __init__(self, session: LabelSession, figure, title: str = "patchwork label"):
        self.session = session
        self.figure = figure
        self.equalised = False
        self.show_help = False
        self.notice = ""
        self._drawn: int | None = None  # the position whose image is on screen
        self._image_axes = figure.add_axes((0.01, 0.02, 0.67, 0.92))
        self._panel = figure.add_axes((0.70, 0.02, 0.29, 0.96))
        self._actions = {
            **{key: (lambda index=index: session.cycle_class(index)) for index, key in enumerate(CLASS_KEYS)},
            "n": session.rest_negative,
            "x": session.toggle_exclude,
            "v": session.toggle_validation,
            "right": lambda: self._step(1),
            " ": lambda: self._step(1),
            "enter": lambda: self._step(1),
            "left": lambda: self._step(-1),
            "backspace": lambda: self._step(-1),
            "h": self._toggle_equalised,
            "?": self._toggle_help,
            "q": self.close,
        }
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
        canvas.mpl_connect("close_event", lambda event: session.finish())
        self.draw()

    # --- input ---

    def on_key(self, event) -> None:
        action = self._actions.get(event.key)
        if action is None:
            key_press_handler(event)
            return
        self.notice = ""
        action()
        if self.session.finished:
            return
        canvas = self.figure.canvas
        if event.key in LABEL_KEYS and canvas.supports_blit:
            # Only the panel changed: repaint just it, instead of re-rendering the image (~2x faster).
            self._draw_panel()
            self.figure.draw_artist(self._panel)
            canvas.blit(self._panel.bbox)
        else:
            self.draw()

    def _step(self, offset: int) -> None:
        if not self.session.step(offset):
            self.notice = "last image: q ends the session" if offset > 0 else "first image"

    def _toggle_equalised(self) -> None:
        self.equalised = not self.equalised

    def _toggle_help(self) -> None:
        self.show_help = not self.show_help

    def close(self) -> None:
        """End the session (compacting the journal) and close the window."""
        import matplotlib.pyplot as plt

        self.session.finish()
        plt.close(self.figure)

    # --- drawing ---

    def draw(self) -> None:
        self._draw_image()
        self._draw_panel()
        self.figure.canvas.draw_idle()

    def _draw_image(self) -> None:
        axes = self._image_axes
        # A zoom (o) or pan (p) holds while the same image is redrawn after an edit.
        view = (axes.get_xlim(), axes.get_ylim()) if self._drawn == self.session.position else None
        self._drawn = self.session.position
        axes.clear()
        axes.set_axis_off()
        picture = self.session.picture()
        if picture.pixels is None:
            axes.set_xlim(0, 1)
            axes.set_ylim(0, 1)
            axes.add_patch(_placeholder_patch())
            axes.text(
                0.5,
                0.5,
                f"cannot show this image\n\n{picture.problem}\n\nx excludes it",
                ha="center",
                va="center",
                fontsize=13,
                wrap=True,
            )
        else:
            pixels = equalise(picture.pixels) if self.equalised else picture.pixels
            axes.imshow(pixels, interpolation="antialiased")
            if view is not None:
                axes.set_xlim(view[0])
                axes.set_ylim(view[1])
        if self.show_help:
            axes.text(
                0.5,
                0.5,
                "\n".join(f"{keys:>19}   {meaning}" for keys, meaning in KEYS_HELP),
                transform=axes.transAxes,
                ha="center",
                va="center",
                multialignment="left",
                family="monospace",
                fontsize=11,
                bbox={"boxstyle": "round,pad=0.8", "facecolor": "white", "alpha": 0.93, "edgecolor": "0.6"},
            )

    def _draw_panel(self) -> None:
        panel = self._panel
        panel.clear()
        panel.set_axis_off()
        # an opaque ground, so that repainting the panel alone covers what it showed before
        panel.add_patch(Rectangle((0, 0), 1, 1, transform=panel.transAxes, color=self.figure.get_facecolor()))
        session, image = self.session, self.session.current
        lines = _Lines(panel)
        lines.add(f"{session.position + 1} / {len(session)}", size=20, weight="bold")
        lines.add(_shorten(os.path.basename(image.filepath), PANEL_WIDTH), size=13)
        lines.add(_shorten(os.path.dirname(image.filepath) or ".", PANEL_WIDTH * 13 // 10), size=10, colour="0.45")
        lines.gap()
        lines.add(f"{'key':<4}{'class':<{NAME_WIDTH}}{'label':<7}model", colour="0.45")
        for index, name in enumerate(session.classes):
            value = image.values[name]
            probability = image.probabilities[name]
            lines.add(
                f"{_class_key(index):<4}{_shorten(name):<{NAME_WIDTH}}{VALUE_TEXT[value]:<7}"
                f"{'-' if np.isnan(probability) else f'{probability:.2f}'}",
                colour=VALUE_COLOUR[value],
                weight="bold" if value is not None else "normal",
            )
        lines.gap()
        for key, name, state in (("x", "exclude", image.exclude), ("v", "validation", image.validation)):
            lines.add(f"{key:<4}{name:<{NAME_WIDTH}}{'yes' if state else 'no'}", colour=FLAG_COLOUR[state])
        lines.gap()
        lines.add(f"{'h':<4}{'equalised':<{NAME_WIDTH}}{'on' if self.equalised else 'off'}", colour="0.45")
        lines.add(f"{'?':<4}keys", colour="0.45")
        if self.notice:
            lines.gap()
            lines.add(self.notice, colour="#b35900")


class _Lines:
    """Text lines stacked down a panel from its top, spaced in points so that they keep
    their size and spacing however the window is resized."""

    def __init__(self, axes):
        self.axes = axes
        self.depth = 0.0  # points below the top of the panel

    def add(self, text: str, size: float = 12, colour: str = "black", weight: str = "normal") -> None:
        self.depth += size * 1.5
        place = offset_copy(self.axes.transAxes, self.axes.figure, y=-self.depth, units="points")
        self.axes.text(0, 1, text, transform=place, family="monospace", fontsize=size, color=colour, weight=weight)

    def gap(self) -> None:
        self.depth += 10


def _class_key(index: int) -> str:
    """The key of the index-th class; classes after the tenth have none (label them with --import)."""
    return CLASS_KEYS[index] if index < len(CLASS_KEYS) else ""


def _shorten(text: str, width: int = NAME_WIDTH - 1) -> str:
    """`text` cut to `width` characters in the middle, so its end (a file's number, a suffix) shows."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep - keep // 2] + "~" + text[len(text) - keep // 2 :]


def _placeholder_patch():
    return Rectangle((0, 0), 1, 1, facecolor="0.9", edgecolor="0.6", hatch="//")


def run(session: LabelSession, title: str = "patchwork label") -> None:
    """Show the window until the person quits; the session is finished (compacted) however it ends."""
    import matplotlib.pyplot as plt

    try:
        figure = plt.figure(figsize=(13, 7.5))
        if type(figure.canvas).required_interactive_framework is None:
            plt.close(figure)
            raise PatchworkError(
                f"no display for the labelling window (matplotlib backend {plt.get_backend()!r}): "
                "run it on a desktop or over ssh -X, or choose a GUI backend with MPLBACKEND=TkAgg"
            )
        LabelWindow(session, figure, title)
        plt.show()
    finally:
        session.finish()
