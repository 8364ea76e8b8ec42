"""The labelling windows: one image large with its labels beside it, or a grid of images for
one class; everything on the keyboard.

UI only: the session (labelling.py) holds the queue, the undo stack and the grid's pages, and
writes the journal; this module draws it with matplotlib and turns key presses into session
calls. Every artist is made once: the next image or page replaces the old one's pixels and
text in place, so a key costs one render of the figure, not a rebuild of it.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backend_bases import key_press_handler
from matplotlib.patches import Rectangle
from matplotlib.transforms import offset_copy

from patchwork_cli.errors import PatchworkError
from patchwork_cli.labelling.drawcache import add_image, add_text
from patchwork_cli.labelling.session import CLASS_KEYS, GridPages, LabelSession, Picture

VALUE_TEXT = {None: "-", 1: "yes", 0: "no"}
VALUE_COLOUR = {None: "0.55", 1: "#1a7f37", 0: "#c62828"}
FLAG_COLOUR = {True: "#b35900", False: "0.55"}
NOTICE_COLOUR = "#b35900"
NAME_WIDTH = 14
PANEL_WIDTH = 30  # characters of 13-point monospace that fit beside the image
UNDO_KEYS = ("u", "ctrl+z")
ACCEPT_KEYS = (" ", "enter")
TILE_KEYS = "123456789"  # the first nine tiles, row-major; a click reaches any tile
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


def keys_help(session: LabelSession) -> tuple[tuple[str, str], ...]:
    """The single-image window's keys, as this session's task and options make them act."""
    if session.one_key:
        class_meaning = "class 1 .. 10: this image is it, next image"
    else:
        class_meaning = "class 1 .. 10: unlabelled > yes > no"
    return (
        ("1 .. 9, 0", class_meaning),
        ("n", "every unlabelled class: no" + (", next image" if session.advance_after_n else "")),
        ("x", "exclude on / off"),
        ("v", "validation on / off"),
        ("u  ctrl+z", "undo the last edit (repeat: further back)"),
        ("right  space  enter", "next image"),
        ("left  backspace", "previous image"),
        ("h", "histogram equalisation on / off"),
        ("o  p  r", "zoom, pan, reset view"),
        ("?", "this help"),
        ("q", "quit (or close the window)"),
    )


def status_text(session: LabelSession, shown: str = "image") -> str:
    pace = session.pace()
    return f"{pace.labelled} labelled  {pace.per_minute:.1f}/min  {pace.on_image:.0f} s on this {shown}"


class _Window:
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


class LabelWindow(_Window):
    """Draws a LabelSession one image at a time and edits it from key presses."""

    def __init__(self, session: LabelSession, figure, title: str = "patchwork label"):
        super().__init__(session, figure, title)
        self.equalised = False
        self.show_help = False
        self._drawn: tuple[int, bool] | None = None  # (position, equalised) of the picture on screen
        axes = self._image_axes = figure.add_axes((0.01, 0.02, 0.67, 0.92))
        axes.set_axis_off()
        self._picture = _PictureArtists(axes, "cannot show this image\n\n{}\n\nx excludes it", fontsize=13)
        self._help = add_text(
            axes,
            0.5,
            0.5,
            "\n".join(f"{keys:>19}   {meaning}" for keys, meaning in keys_help(session)),
            transform=axes.transAxes,
            ha="center",
            va="center",
            multialignment="left",
            family="monospace",
            fontsize=11,
            bbox={"boxstyle": "round,pad=0.8", "facecolor": "white", "alpha": 0.93, "edgecolor": "0.6"},
            visible=False,
        )
        self._lines = _PanelLines(self._panel, session.classes)
        self.refresh()

    def _actions(self) -> dict:
        session = self.session
        return {
            **{key: (lambda index=index: self._class_key(index)) for index, key in enumerate(CLASS_KEYS)},
            "n": self._rest_negative,
            "x": session.toggle_exclude,
            "v": session.toggle_validation,
            **{key: self._undo for key in UNDO_KEYS},
            "right": lambda: self._step(1),
            " ": lambda: self._step(1),
            "enter": lambda: self._step(1),
            "left": lambda: self._step(-1),
            "backspace": lambda: self._step(-1),
            "h": self._toggle_equalised,
            "?": self._toggle_help,
            "q": self.close,
        }

    def _class_key(self, index: int) -> None:
        if self.session.class_key(index):
            self._step(1)

    def _rest_negative(self) -> None:
        if self.session.rest_negative():
            self._step(1)

    def _undo(self) -> None:
        if self.session.undo():
            self.notice = f"undone: {_shorten(os.path.basename(self.session.current.filepath), PANEL_WIDTH - 8)}"
        else:
            self.notice = "nothing to undo"

    def _step(self, offset: int) -> None:
        if not self.session.step(offset):
            self.notice = "last image: q ends the session" if offset > 0 else "first image"

    def _toggle_equalised(self) -> None:
        self.equalised = not self.equalised

    def _toggle_help(self) -> None:
        self.show_help = not self.show_help

    # --- drawing ---

    def _show_pictures(self) -> bool:
        help_changed = self._help.get_visible() != self.show_help
        self._help.set_visible(self.show_help)
        wanted = (self.session.position, self.equalised)
        if wanted == self._drawn:
            return help_changed
        # A zoom (o) or pan (p) holds while the same image is redrawn (equalised on or off).
        new_image = self._drawn is None or self._drawn[0] != wanted[0]
        self._drawn = wanted
        self._picture.show(self.session.picture(), self.equalised, new_image)
        return True

    def _show_panel(self) -> None:
        self._lines.show(self.session, self.equalised, self.notice)


class _PanelLines:
    """The single-image panel: one text artist per line, made once and updated in place."""

    def __init__(self, panel, classes: list[str]):
        lines = _Lines(panel)
        self.position = lines.add(size=20, weight="bold")
        self.name = lines.add(size=13)
        self.folder = lines.add(size=10, colour="0.45")
        lines.gap()
        lines.add(f"{'key':<4}{'class':<{NAME_WIDTH}}{'label':<7}model", colour="0.45")
        self.classes = [lines.add() for _ in classes]
        lines.gap()
        self.exclude = lines.add()
        self.validation = lines.add()
        lines.gap()
        self.equalised = lines.add(colour="0.45")
        lines.add(f"{'?':<4}keys", colour="0.45")
        lines.gap()
        self.notice = lines.add(colour=NOTICE_COLOUR)

    def show(self, session: LabelSession, equalised: bool, notice: str) -> None:
        image = session.current
        self.position.set_text(f"{session.position + 1} / {len(session)}")
        self.name.set_text(_shorten(os.path.basename(image.filepath), PANEL_WIDTH))
        self.folder.set_text(_shorten(os.path.dirname(image.filepath) or ".", PANEL_WIDTH * 13 // 10))
        for index, (line, name) in enumerate(zip(self.classes, session.classes, strict=True)):
            value, probability = image.values[name], image.probabilities[name]
            line.set_text(
                f"{_class_key(index):<4}{_shorten(name):<{NAME_WIDTH}}{VALUE_TEXT[value]:<7}"
                f"{'-' if np.isnan(probability) else f'{probability:.2f}'}"
            )
            line.set_color(VALUE_COLOUR[value])
            line.set_fontweight("bold" if value is not None else "normal")
        for line, key, name, state in (
            (self.exclude, "x", "exclude", image.exclude),
            (self.validation, "v", "validation", image.validation),
        ):
            line.set_text(f"{key:<4}{name:<{NAME_WIDTH}}{'yes' if state else 'no'}")
            line.set_color(FLAG_COLOUR[state])
        self.equalised.set_text(f"{'h':<4}{'equalised':<{NAME_WIDTH}}{'on' if equalised else 'off'}")
        self.notice.set_text(notice)


class GridWindow(_Window):
    """Draws GridPages: a page of tiles for one class, toggled by keys 1-9 or clicks."""

    _shown = "page"

    def __init__(self, grid: GridPages, figure, title: str = "patchwork label"):
        super().__init__(grid.session, figure, title)
        self.grid = grid
        self._excluding = False  # x was the last key: the next tile key excludes that tile
        self._exclude_next = False
        self._drawn_page: int | None = None
        self.tiles = [_Tile(figure, box, number) for number, box in enumerate(_tile_boxes(grid.shape))]
        self._lines = _GridPanelLines(self._panel, grid)
        figure.canvas.mpl_connect("button_press_event", lambda event: self.on_click(event))
        self.refresh()

    def _actions(self) -> dict:
        return {
            **{key: (lambda tile=tile: self._tile_key(tile)) for tile, key in enumerate(TILE_KEYS)},
            "x": self._start_excluding,
            **{key: self._accept for key in ACCEPT_KEYS},
            **{key: self._undo for key in UNDO_KEYS},
            "q": self.close,
        }

    def on_key(self, event) -> None:
        # x waits for one key only: a tile's excludes that tile, any other cancels
        self._exclude_next, self._excluding = self._excluding, False
        if self._exclude_next and event.key not in self._actions():
            self.notice = ""
            self.refresh()
        super().on_key(event)

    def on_click(self, event) -> None:
        """A left click toggles the tile, a right click excludes it (not while zooming or panning)."""
        toolbar = self.figure.canvas.toolbar
        tile = next((t for t, shown in enumerate(self.tiles) if shown.axes is event.inaxes), None)
        if tile is None or (toolbar is not None and toolbar.mode) or event.button not in (1, 3):
            return
        self.notice = ""
        (self.grid.toggle if event.button == 1 else self.grid.toggle_exclude)(tile)
        self.refresh()

    def _tile_key(self, tile: int) -> None:
        if self._exclude_next:
            self.grid.toggle_exclude(tile)
        else:
            self.grid.toggle(tile)

    def _start_excluding(self) -> None:
        self.notice = "x: which tile? (its key)"
        self._excluding = True

    def _accept(self) -> None:
        if not self.grid.accept():
            self.notice = "last page: q ends the session"

    def _undo(self) -> None:
        self.notice = f"undone: page {self.grid.page + 1}" if self.grid.undo() else "nothing to undo"

    # --- drawing ---

    def _show_pictures(self) -> bool:
        positions = self.grid.positions
        new_page = self._drawn_page != self.session.position
        self._drawn_page = self.session.position
        for number, tile in enumerate(self.tiles):
            if number >= len(positions):
                tile.axes.set_visible(False)
                continue
            tile.axes.set_visible(True)
            if new_page:
                tile.picture.show(self.session.picture(positions[number]), equalised=False, new_image=True)
            tile.show_mark(self.grid.class_name, self.grid.toggled[number], self.grid.excluded[number])
        return True  # tile marks are inside the tiles: the whole figure renders

    def _show_panel(self) -> None:
        self._lines.show(self.grid, self.notice)


class _Tile:
    """One tile of the grid: the picture, its key, a frame and a mark saying what accepting does."""

    def __init__(self, figure, box: tuple[float, float, float, float], number: int):
        axes = self.axes = figure.add_axes(box)
        axes.set_axis_off()
        self.picture = _PictureArtists(axes, "cannot show\n{}", fontsize=9)
        self.frame = axes.add_patch(
            Rectangle((0, 0), 1, 1, transform=axes.transAxes, fill=False, clip_on=False, linewidth=2)
        )
        key = TILE_KEYS[number] if number < len(TILE_KEYS) else ""
        label = {"boxstyle": "round,pad=0.25", "facecolor": "white", "alpha": 0.85, "edgecolor": "none"}
        add_text(axes, 0.03, 0.97, key, transform=axes.transAxes, ha="left", va="top", fontsize=13, bbox=label)
        bottom = {"transform": axes.transAxes, "ha": "center", "va": "bottom"}
        self.mark = add_text(axes, 0.5, 0.03, "", fontsize=11, weight="bold", bbox=label, **bottom)

    def show_mark(self, class_name: str, toggled: bool, excluded: bool) -> None:
        if excluded:
            text, colour, width = "excluded", FLAG_COLOUR[True], 5
        elif toggled:
            text, colour, width = f"{_shorten(class_name)}: yes", VALUE_COLOUR[1], 5
        else:
            text, colour, width = f"{_shorten(class_name)}: no", VALUE_COLOUR[0], 1.5
        self.mark.set_text(text)
        self.mark.set_color(colour)
        self.frame.set_edgecolor(colour)
        self.frame.set_linewidth(width)
        self.picture.image.set_alpha(0.35 if excluded else 1.0)


class _GridPanelLines:
    """The grid panel: the class, the page, the keys and a notice, updated in place."""

    KEYS = (
        ("1 .. 9", "tile: yes / no (or click it)"),
        ("x, 1 .. 9", "tile: excluded on / off"),
        ("", "(or right-click it)"),
        ("space enter", "accept: yes tiles = 1,"),
        ("", "no tiles = 0; next page"),
        ("u  ctrl+z", "undo the last page"),
        ("q", "quit"),
    )

    def __init__(self, panel, grid: GridPages):
        lines = _Lines(panel)
        lines.add(f"{_shorten(grid.class_name, PANEL_WIDTH * 10 // 20)}?", size=20, weight="bold")
        self.page = lines.add(size=13)
        lines.gap()
        for keys, meaning in self.KEYS:
            lines.add(f"{keys:<12}{meaning}", size=10, colour="0.35")
        lines.gap()
        self.notice = lines.add(colour=NOTICE_COLOUR)

    def show(self, grid: GridPages, notice: str) -> None:
        marked = sum(grid.toggled[t] and not grid.excluded[t] for t in range(len(grid.positions)))
        self.page.set_text(f"page {grid.page + 1} / {grid.pages}: {marked} yes")
        self.notice.set_text(notice)


class _PictureArtists:
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


def _tile_boxes(shape: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Figure rectangles of the tiles, row-major, in the area left of the panel."""
    rows, columns = shape
    left, bottom, width, height, gap = 0.01, 0.02, 0.67, 0.96, 0.012
    tile_width, tile_height = (width - gap * (columns - 1)) / columns, (height - gap * (rows - 1)) / rows
    return [
        (left + c * (tile_width + gap), bottom + (rows - 1 - r) * (tile_height + gap), tile_width, tile_height)
        for r in range(rows)
        for c in range(columns)
    ]


class _Lines:
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


def _class_key(index: int) -> str:
    """The key of the index-th class; classes after the tenth have none (label them with --import)."""
    return CLASS_KEYS[index] if index < len(CLASS_KEYS) else ""


def _shorten(text: str, width: int = NAME_WIDTH - 1) -> str:
    """`text` cut to `width` characters in the middle, so its end (a file's number, a suffix) shows."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep - keep // 2] + "~" + text[len(text) - keep // 2 :]


def run(session: LabelSession, title: str = "patchwork label", grid: GridPages | None = None) -> None:
    """Show the window (the grid's, when given) until the person quits; the session is
    finished (compacted) however it ends."""
    import matplotlib.pyplot as plt

    try:
        figure = plt.figure(figsize=(13, 7.5))
        if type(figure.canvas).required_interactive_framework is None:
            plt.close(figure)
            raise PatchworkError(
                f"no display for the labelling window (matplotlib backend {plt.get_backend()!r}): "
                "run it on a desktop or over ssh -X, or choose a GUI backend with MPLBACKEND=TkAgg"
            )
        if grid is None:
            LabelWindow(session, figure, title)
        else:
            GridWindow(grid, figure, title)
        plt.show()
    finally:
        session.finish()
