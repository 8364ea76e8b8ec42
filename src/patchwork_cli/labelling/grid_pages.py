"""Grid mode: a session's images a page of rows x columns at a time, each tile toggled for one
class; accepting a page writes it through the session (labelling/grid_window.py draws it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from patchwork_cli.errors import PatchworkError
from patchwork_cli.store.label_schema import EXCLUDE

if TYPE_CHECKING:
    from patchwork_cli.labelling.session import LabelSession

GRID_SIDES = range(1, 6)  # rows and columns of a grid page


def parse_grid(text: str) -> tuple[int, int]:
    """(rows, columns) of a --grid value such as '3x3'."""
    rows, x, columns = text.lower().partition("x")
    if x and rows.isdigit() and columns.isdigit() and int(rows) in GRID_SIDES and int(columns) in GRID_SIDES:
        return int(rows), int(columns)
    sides = f"{GRID_SIDES.start} to {GRID_SIDES.stop - 1}"
    raise PatchworkError(f"--grid: expected RxC, rows and columns from {sides} (e.g. 3x3), got {text!r}")


class GridPages:
    """Grid mode: the session's images a page of rows x columns at a time, for one class.

    Each tile is toggled "contains the class" or not, or excluded; accepting the page writes
    one record per tile (toggled: class = 1, else 0; excluded: exclude only, the class as it
    was) and shows the next page. A page's tiles start from the labels its images hold, so a
    page of known positives accepted as it comes keeps them. In a multiclass project the class
    = 1 sets the others to 0, as everywhere; = 0 says only what the image is not.
    """

    def __init__(self, session: LabelSession, shape: tuple[int, int], class_name: str):
        self.session = session
        self.shape = shape
        self.class_name = class_name
        self.page_size = shape[0] * shape[1]
        self.toggled: list[bool] = []
        self.excluded: list[bool] = []
        # this page and the next decoded ahead, so that accepting shows the next page at once
        session.prefetch_ahead = 2 * self.page_size - 1
        session.go_to(session.position - session.position % self.page_size)
        self._start_tiles()

    @property
    def positions(self) -> range:
        """The queue positions on the page, tile by tile (the last page may be short)."""
        return range(self.session.position, min(self.session.position + self.page_size, len(self.session)))

    @property
    def page(self) -> int:
        return self.session.position // self.page_size

    @property
    def pages(self) -> int:
        return -(-len(self.session) // self.page_size)

    def toggle(self, tile: int) -> None:
        """Tile `tile` (0-based, row-major) contains the class / does not; an excluded tile is let back in."""
        if tile < len(self.positions):
            self.toggled[tile] = not self.toggled[tile]
            self.excluded[tile] = False

    def toggle_exclude(self, tile: int) -> None:
        if tile < len(self.positions):
            self.excluded[tile] = not self.excluded[tile]

    def accept(self) -> bool:
        """Record the page and show the next one; False when it was the last page (it stays on screen)."""
        self.session.record_page({p: self._tile_fields(t, p) for t, p in enumerate(self.positions)})
        following = self.session.position + self.page_size
        if following >= len(self.session):
            self._start_tiles()
            return False
        self.session.go_to(following)
        self._start_tiles()
        return True

    def undo(self) -> bool:
        """Revert the last accepted page (or edit) and show its page, tiles as its labels now are."""
        if not self.session.undo():
            return False
        self.session.go_to(self.session.position - self.session.position % self.page_size)
        self._start_tiles()
        return True

    def _tile_fields(self, tile: int, position: int) -> dict:
        image = self.session.images[position]
        if self.excluded[tile]:
            return {EXCLUDE: True}
        fields = {self.class_name: int(self.toggled[tile])}
        return fields | {EXCLUDE: False} if image.exclude else fields

    def _start_tiles(self) -> None:
        images = [self.session.images[p] for p in self.positions]
        self.toggled = [image.values[self.class_name] == 1 for image in images]
        self.excluded = [image.exclude for image in images]
