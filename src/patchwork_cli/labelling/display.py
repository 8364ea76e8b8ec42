"""Opening a labelling window on the display: the single-image window, or the grid's when
there are grid pages, until the person quits."""

from __future__ import annotations

from patchwork_cli.errors import PatchworkError
from patchwork_cli.labelling.grid_pages import GridPages
from patchwork_cli.labelling.grid_window import GridWindow
from patchwork_cli.labelling.image_window import LabelWindow
from patchwork_cli.labelling.session import LabelSession


def run(session: LabelSession, *, title: str = "patchwork label", grid: GridPages | None = None) -> None:
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
