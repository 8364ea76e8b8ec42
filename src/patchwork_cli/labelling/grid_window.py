"""The grid labelling window: a page of tiles for one class, toggled by keys or clicks
(labelling/window.py has what it shares with the single-image window)."""

from __future__ import annotations

from matplotlib.patches import Rectangle

from patchwork_cli.labelling.drawcache import add_text
from patchwork_cli.labelling.grid_pages import GridPages
from patchwork_cli.labelling.window import (
    FLAG_COLOUR,
    NOTICE_COLOUR,
    PANEL_WIDTH,
    UNDO_KEYS,
    VALUE_COLOUR,
    PictureArtists,
    TextLines,
    Window,
    shorten,
)

ACCEPT_KEYS = (" ", "enter")
TILE_KEYS = "123456789"  # the first nine tiles, row-major; a click reaches any tile


class GridWindow(Window):
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
        self.picture = PictureArtists(axes, "cannot show\n{}", fontsize=9)
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
            text, colour, width = f"{shorten(class_name)}: yes", VALUE_COLOUR[1], 5
        else:
            text, colour, width = f"{shorten(class_name)}: no", VALUE_COLOUR[0], 1.5
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
        lines = TextLines(panel)
        lines.add(f"{shorten(grid.class_name, PANEL_WIDTH * 10 // 20)}?", size=20, weight="bold")
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
