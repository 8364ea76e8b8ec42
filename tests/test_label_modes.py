"""One key per image, undo, grid pages and the status line of the labelling windows, driven by
synthetic key presses and clicks on the Agg backend: after every key, the journal holds exactly
the records that key means."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from builders import snapshot  # noqa: E402
from matplotlib.backend_bases import KeyEvent, MouseEvent  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402

from patchwork_cli import open_project  # noqa: E402
from patchwork_cli.errors import PatchworkError  # noqa: E402
from patchwork_cli.labelling.drawcache import add_image, add_text  # noqa: E402
from patchwork_cli.labelling.grid_pages import GridPages, parse_grid  # noqa: E402
from patchwork_cli.labelling.grid_window import GridWindow  # noqa: E402
from patchwork_cli.labelling.image_window import LabelWindow  # noqa: E402
from patchwork_cli.labelling.session import LabelSession  # noqa: E402

UNLABELLED = {"cat": None, "dog": None, "bird": None}


@pytest.fixture
def multiclass(tmp_path, cli, images):
    cli("init", "pets", "--images", "images", "--task", "multiclass", "--classes", "cat,dog,bird")
    return open_project(tmp_path / "pets")


@pytest.fixture
def multilabel(project_dir):
    return open_project(project_dir)


@pytest.fixture
def figures():
    made = []
    yield lambda: made.append(plt.figure()) or made[-1]
    for figure in made:
        plt.close(figure)


def open_window(project, rows, clock, figures, **options) -> LabelWindow:
    return LabelWindow(LabelSession(project, rows, clock=clock, **options), figures())


def open_grid(project, rows, clock, figures, shape=(2, 2), class_name="dog") -> GridWindow:
    return GridWindow(GridPages(LabelSession(project, rows, clock=clock), shape, class_name), figures())


def press(window, *keys: str) -> None:
    canvas = window.figure.canvas
    for key in keys:
        canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, key))


def click(window: GridWindow, tile: int, button: int = 1) -> None:
    canvas = window.figure.canvas
    box = window.tiles[tile].axes.get_window_extent()
    event = MouseEvent("button_press_event", canvas, (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2, button=button)
    canvas.callbacks.process("button_press_event", event)


def journal(project) -> list[tuple[str, dict, float]]:
    records = project.store.journal.read()
    return [(r["filepath"], r["set"], r["seconds"]) for r in records]


def name(project, row: int) -> str:
    return project.labels()["filepath"][row]


def panel_text(window) -> str:
    return "\n".join(t.get_text() for t in window._panel.texts)


# --- one key per image (multiclass) -------------------------------------------------------


def test_a_class_key_labels_the_image_whole_and_shows_the_next(multiclass, clock, figures):
    window = open_window(multiclass, [0, 1, 2], clock, figures)
    clock.now += 2.0
    press(window, "2")
    assert journal(multiclass) == [(name(multiclass, 0), {"dog": 1, "cat": 0, "bird": 0}, 2.0)]
    assert window.session.position == 1 and "2 / 3" in panel_text(window)
    clock.now += 1.5
    press(window, "1")
    assert journal(multiclass)[-1] == (name(multiclass, 1), {"cat": 1, "dog": 0, "bird": 0}, 1.5)
    press(window, "3")  # the last image: labelled, and the window says there is no next one
    assert journal(multiclass)[-1][:2] == (name(multiclass, 2), {"bird": 1, "cat": 0, "dog": 0})
    assert window.session.position == 2 and "last image: q ends the session" in panel_text(window)
    press(window, "left", "left", "2")  # already a dog: no second record, on to the next image
    assert len(journal(multiclass)) == 3 and window.session.position == 1
    press(window, "9")  # no ninth class: nothing
    assert len(journal(multiclass)) == 3 and window.session.position == 1
    table = multiclass.labels()
    assert table.loc[[0, 1, 2], ["cat", "dog", "bird"]].values.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]


def test_the_next_image_replaces_the_old_one_in_place(multiclass, clock, figures):
    window = open_window(multiclass, [0, 1], clock, figures)
    image, texts = window._image_axes.images[0], list(window._panel.texts)
    first = image.get_array().copy()
    press(window, "1")
    assert window._image_axes.images[0] is image and list(window._panel.texts) == texts
    assert len(window._image_axes.images) == 1 and not np.array_equal(image.get_array(), first)


@pytest.mark.slow
def test_multilabel_keys_stay_and_advance_after_n_moves_on(tmp_path, multilabel, clock, figures):
    window = open_window(multilabel, [0, 1], clock, figures)
    press(window, "1", "n")
    assert window.session.position == 0  # the default: n labels, the image stays
    config = multilabel.config_path
    config.write_text(config.read_text().replace("advance_after_n: false", "advance_after_n: true"))
    project = open_project(multilabel.directory)
    window = open_window(project, [1, 0], clock, figures)
    press(window, "2", "n")
    assert journal(project)[-1][:2] == (name(project, 1), {"cat": 0, "bird": 0})
    assert window.session.position == 1
    assert open_window(project, [1], clock, figures, advance_after_n=False).session.advance_after_n is False


def test_advance_after_n_is_checked_like_every_key(multilabel):
    config = multilabel.config_path
    config.write_text(config.read_text().replace("advance_after_n: false", "advance_after_n: sometimes"))
    with pytest.raises(PatchworkError, match=r"labelling\.advance_after_n: expected true or false, got 'sometimes'$"):
        open_project(multilabel.directory)


# --- undo -------------------------------------------------------------------------------------


def test_undo_walks_back_with_new_records_on_whichever_image(multiclass, clock, figures):
    window = open_window(multiclass, [0, 1, 2], clock, figures)
    press(window, "2", "1")
    assert window.session.position == 2
    clock.now += 3.0
    press(window, "u")  # the edit of image 1, though image 2 is on screen: back to image 1
    assert journal(multiclass)[-1] == (name(multiclass, 1), UNLABELLED, 3.0)
    assert window.session.position == 1 and "undone: img_0001.png" in panel_text(window)
    press(window, "ctrl+z")
    assert journal(multiclass)[-1][:2] == (name(multiclass, 0), UNLABELLED)
    assert window.session.position == 0
    press(window, "u")
    assert "nothing to undo" in panel_text(window)
    assert len(journal(multiclass)) == 4  # two edits, two undos: nothing deleted
    assert multiclass.labels().loc[[0, 1], ["cat", "dog", "bird"]].isna().all().all()


def test_undo_restores_exactly_what_the_image_held(multiclass, clock, figures):
    # a hand-made row: one 1 beside unlabelled classes (a multiclass edit would add the 0s)
    multiclass.record_edits([(name(multiclass, 0), {"cat": 1}, None)], exact=True)
    window = open_window(multiclass, [0], clock, figures)
    press(window, "x", "2")
    assert journal(multiclass)[-1][1] == {"dog": 1, "cat": 0, "bird": 0}
    press(window, "u")
    assert journal(multiclass)[-1][1] == {"dog": None, "cat": 1, "bird": None}
    press(window, "u")
    assert journal(multiclass)[-1][1] == {"exclude": False}
    row = multiclass.labels().loc[0]
    assert row["cat"] == 1 and np.isnan(row["dog"]) and not row["exclude"]


def test_undo_of_a_multilabel_cycle_and_the_status_line(multilabel, clock, figures):
    window = open_window(multilabel, [0, 1, 2], clock, figures)
    press(window, "1", "1", "right", "3")
    clock.now += 56
    press(window, "right")
    clock.now += 4
    press(window, "enter")
    assert "0 labelled  0.0/min  0 s on this image" in panel_text(window)  # the line moves with the clock
    window._tick()  # the window's timer, once a second: the line counts images, not edits
    assert "2 labelled  2.0/min  4 s on this image" in panel_text(window)
    press(window, "u", "u")
    assert [record[1] for record in journal(multilabel)[-2:]] == [{"bird": None}, {"cat": 1}]
    window._tick()
    assert "1 labelled" in panel_text(window) and window.session.position == 0
    assert multilabel.labels().loc[0, "cat"] == 1


# --- grid pages ------------------------------------------------------------------------------------


def test_a_grid_page_is_toggled_by_keys_and_clicks_and_accepted_whole(multilabel, clock, figures):
    window = open_grid(multilabel, [0, 1, 2, 3, 4, 5], clock, figures)
    assert [tile.axes.get_visible() for tile in window.tiles] == [True] * 4
    press(window, "1", "3", "3")
    click(window, 3)
    press(window, "x", "2")
    assert journal(multilabel) == []  # toggles are not labels until the page is accepted
    assert [tile.mark.get_text() for tile in window.tiles] == ["dog: yes", "excluded", "dog: no", "dog: yes"]
    clock.now += 8.0
    press(window, " ")
    assert journal(multilabel) == [
        (name(multilabel, 0), {"dog": 1}, 2.0),
        (name(multilabel, 1), {"exclude": True}, 2.0),
        (name(multilabel, 2), {"dog": 0}, 2.0),
        (name(multilabel, 3), {"dog": 1}, 2.0),
    ]
    # the next page: two images, the other tiles hidden
    assert window.grid.page == 1 and [tile.axes.get_visible() for tile in window.tiles] == [True, True, False, False]
    click(window, 1, button=3)  # a right click excludes
    press(window, "4", "enter")  # a key past the page does nothing
    assert journal(multilabel)[4:] == [
        (name(multilabel, 4), {"dog": 0}, 0.0),
        (name(multilabel, 5), {"exclude": True}, 0.0),
    ]
    assert "last page: q ends the session" in panel_text(window)
    table = multilabel.labels()
    assert table["dog"].tolist()[:6][::2] == [1, 0, 0] and table["exclude"].tolist()[:6] == [0, 1, 0, 0, 0, 1]


def test_undo_in_a_grid_reverts_a_page_and_shows_it(multilabel, clock, figures):
    window = open_grid(multilabel, [0, 1, 2, 3, 4, 5], clock, figures)
    press(window, "2", " ", "1", " ")
    assert len(journal(multilabel)) == 6
    press(window, "u")
    assert journal(multilabel)[6:] == [(name(multilabel, r), {"dog": None}, 0.0) for r in (4, 5)]
    assert window.grid.page == 1 and window.grid.toggled == [False, False]
    press(window, "ctrl+z")
    assert [record[1] for record in journal(multilabel)[8:]] == [{"dog": None}] * 4
    assert window.grid.page == 0 and "undone: page 1" in panel_text(window)
    assert multilabel.labels()["dog"].isna().all()


def test_grid_tiles_start_from_the_labels_and_a_multiclass_one_sets_the_others(multiclass, clock, figures):
    multiclass.label(name(multiclass, 1), cat=1)
    multiclass.label(name(multiclass, 2), exclude=True)
    window = open_grid(multiclass, [0, 1, 2, 3], clock, figures, shape=(1, 4), class_name="cat")
    assert window.grid.toggled == [False, True, False, False] and window.grid.excluded == [False, False, True, False]
    press(window, "1", "3", " ")  # tile 3 was excluded: its key lets it back in, as a cat
    records = [record[1] for record in journal(multiclass)[2:]]
    assert records == [
        {"cat": 1, "dog": 0, "bird": 0},
        {"cat": 1, "dog": 0, "bird": 0},
        {"cat": 1, "exclude": False, "dog": 0, "bird": 0},
        {"cat": 0},
    ]


def test_q_in_a_grid_ends_the_session(multilabel, clock, figures):
    window = open_grid(multilabel, [0, 1], clock, figures)
    press(window, "1", " ", "q")
    assert window.session.finished and multilabel.store.journal.read() == []
    assert open_project(multilabel.directory).store.load_unlocked().loc[0, "dog"] == 1


@pytest.mark.parametrize("text", ["3x3", "1x5", "5X1"])
def test_grid_shapes(text):
    rows, columns = parse_grid(text)
    assert f"{rows}x{columns}" == text.lower()


def test_label_grid_refuses_bad_options_naming_them(project_dir, cli):
    before = snapshot(project_dir)
    shape = "error: --grid: expected RxC, rows and columns from 1 to 5 (e.g. 3x3), got "
    for arguments, message in [
        (["--grid", "6x1", "--class", "dog"], shape + "'6x1'"),
        (["--grid", "3", "--class", "dog"], shape + "'3'"),
        (["--grid", "0x2", "--class", "dog"], shape + "'0x2'"),
        (["--grid", "3x3"], "error: --grid needs --class: the class its tiles are marked for"),
        (["--class", "dog"], "error: --class names the class of a grid page: add --grid RxC (e.g. --grid 3x3)"),
        (
            ["--grid", "3x3", "--class", "dgo"],
            "error: --class: unknown class 'dgo' (did you mean 'dog'?); classes: cat, dog, bird",
        ),
    ]:
        result = cli("--project", "proj", "label", *arguments, expect=1)
        assert result.stderr == message + "\n", arguments
    assert snapshot(project_dir) == before


@pytest.mark.slow
def test_label_grid_chooses_the_rows_where_the_class_is_unlabelled(project_dir, cli):
    project = open_project(project_dir)
    project.edit_labels((path, {"dog": 0}) for path in project.labels()["filepath"])
    project.compact()
    arguments = ["--project", "proj", "label", "--grid", "2x2", "--class", "dog", "--strategy", "random"]
    assert cli(*arguments).stderr == "nothing to label\n"
    # another filter, or another class, finds rows: the window is asked for (and refused on Agg)
    assert "no display" in cli(*arguments, "--from", "lacks:dog", expect=1).stderr
    assert "no display" in cli(*arguments[:-3], "cat", "--strategy", "random", expect=1).stderr


# --- text from bitmaps --------------------------------------------------------------------------


def test_cached_text_draws_the_same_pixels_as_text(figures):
    def window(make_text):
        figure = figures()
        axes = figure.add_axes((0.5, 0.4, 0.5, 0.6))  # away from the origin: the axes clip its texts
        axes.set_axis_off()
        lines = []
        for line in range(6):
            place = offset_copy(axes.transAxes, figure, y=-(line + 1) * 18.3, units="points")
            style = {"family": "monospace", "fontsize": 11 + line % 2, "weight": ("normal", "bold")[line % 2]}
            text = f"{line}   cat{line}    yes   0.{line}5"
            lines.append(make_text(axes, 0.013 * line, 1, text, transform=place, **style))
        return figure, lines

    def pixels(figure):
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba()).copy()

    cached, cached_lines = window(add_text)
    plain, plain_lines = window(lambda axes, *args, **kw: axes.text(*args, **kw))
    assert np.array_equal(pixels(cached), pixels(plain))
    assert np.array_equal(pixels(cached), pixels(plain))  # drawn again unchanged: pasted again
    for lines in (cached_lines, plain_lines):  # a changed line is laid out and rendered anew
        lines[2].set_text("2   dog2    no    0.99")
        lines[3].set_color("#c62828")
        lines[4].set_visible(False)
    assert np.array_equal(pixels(cached), pixels(plain))


def test_pasted_images_look_as_matplotlib_draws_them_and_zoom_as_usual(figures):
    rng = np.random.default_rng(3)
    pixels = np.dstack((rng.integers(0, 255, (12, 20, 3), dtype=np.uint8), np.full((12, 20), 255, np.uint8)))

    def render(show, zoom=None):
        figure = figures()
        axes = figure.add_axes((0.1, 0.1, 0.8, 0.8))
        axes.set_axis_off()
        show(axes)
        if zoom:
            axes.set_xlim(*zoom)
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba()).copy()

    def pasted(axes):
        add_image(axes, pixels).set_extent((-0.5, 19.5, 11.5, -0.5))

    def matplotlibs(axes):
        axes.imshow(pixels, interpolation="nearest")

    ours, theirs = render(pasted), render(matplotlibs)
    # nearest-neighbour enlarging: where a source pixel's edge falls may round the other way,
    # so every pixel drawn is matplotlib's own or its neighbour's
    near = np.zeros(ours.shape[:2], bool)
    for down in (-1, 0, 1):
        for right in (-1, 0, 1):
            near |= (ours == np.roll(theirs, (down, right), axis=(0, 1))).all(axis=2)
    assert near.all() and (ours == theirs).all(axis=2).mean() > 0.95
    assert np.array_equal(render(pasted, zoom=(2, 9)), render(matplotlibs, zoom=(2, 9)))
