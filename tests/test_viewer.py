"""The labelling session and window, driven by synthetic key presses on the Agg backend:
after every key, the journal holds exactly the edit that key means."""

from __future__ import annotations

import gc
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import zarr  # noqa: E402
from builders import CLASSES, probe, snapshot  # noqa: E402
from matplotlib.backend_bases import CloseEvent, KeyEvent, key_press_handler  # noqa: E402
from PIL import Image  # noqa: E402

from patchwork_cli import open_project  # noqa: E402
from patchwork_cli.errors import PatchworkError  # noqa: E402
from patchwork_cli.labelling.image_window import LabelWindow  # noqa: E402
from patchwork_cli.labelling.session import LabelSession, rows_for_paths  # noqa: E402
from patchwork_cli.labelling.window import equalise  # noqa: E402
from patchwork_cli.store import runs  # noqa: E402
from patchwork_cli.util.images import load_display_image  # noqa: E402


@pytest.fixture
def project(project_dir):
    return open_project(project_dir)


@pytest.fixture
def window(project, clock):
    session = LabelSession(project, [0, 1, 2], clock=clock)
    figure = plt.figure()
    yield LabelWindow(session, figure)
    session.finish()
    plt.close(figure)


def press(window: LabelWindow, *keys: str) -> None:
    for key in keys:
        canvas = window.figure.canvas
        canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, key))


def journal(project) -> list[dict]:
    path = project.directory / "labels.journal"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def last_edit(project) -> tuple[str, dict, float]:
    record = journal(project)[-1]
    return record["filepath"], record["set"], record["seconds"]


def panel_text(window: LabelWindow) -> str:
    return "\n".join(t.get_text() for t in window._panel.texts)


def visible_texts(axes) -> list:
    return [t for t in axes.texts if t.get_visible()]


def shown(window: LabelWindow) -> np.ndarray:
    """The RGB pixels on screen (the window hands matplotlib RGBA, opaque)."""
    pixels = np.asarray(window._image_axes.images[0].get_array())
    assert (pixels[..., 3] == 255).all()
    return pixels[..., :3]


# --- keys and the journal ---------------------------------------------------------------


def test_class_keys_cycle_unlabelled_yes_no_with_one_journal_line_each(window, project, clock):
    first = window.session.current.filepath
    clock.now += 2.5
    press(window, "1")
    assert last_edit(project) == (first, {"cat": 1}, 2.5)
    clock.now += 1.0
    press(window, "1")
    assert last_edit(project) == (first, {"cat": 0}, 1.0)
    press(window, "1")
    assert last_edit(project) == (first, {"cat": None}, 0.0)
    press(window, "3")
    assert last_edit(project) == (first, {"bird": 1}, 0.0)
    assert len(journal(project)) == 4
    table = project.labels()
    assert np.isnan(table.loc[0, "cat"]) and np.isnan(table.loc[0, "dog"]) and table.loc[0, "bird"] == 1
    # a key past the last class does nothing
    press(window, "7", "0")
    assert len(journal(project)) == 4


def test_n_sets_only_the_still_unlabelled_classes_to_no(window, project):
    first = window.session.current.filepath
    press(window, "2")
    press(window, "n")
    assert last_edit(project)[:2] == (first, {"cat": 0, "bird": 0})
    press(window, "n")  # nothing left unlabelled: no record
    assert len(journal(project)) == 2
    assert project.labels().loc[0, CLASSES].tolist() == [0, 1, 0]


def test_x_and_v_toggle_exclude_and_validation(window, project):
    first = window.session.current.filepath
    press(window, "x")
    assert last_edit(project)[:2] == (first, {"exclude": True})
    press(window, "v")
    assert last_edit(project)[:2] == (first, {"validation": True})
    press(window, "x")
    assert last_edit(project)[:2] == (first, {"exclude": False})
    table = project.labels()
    assert not table.loc[0, "exclude"] and table.loc[0, "validation"]
    assert "exclude       no" in panel_text(window) and "validation    yes" in panel_text(window)


def test_navigation_keys_move_within_the_queue_and_edits_follow_the_image(window, project, clock):
    paths = project.labels()["filepath"].tolist()
    for key, expected in [("right", 1), (" ", 2), ("enter", 2), ("left", 1), ("backspace", 0), ("left", 0)]:
        press(window, key)
        assert window.session.position == expected, key
    assert journal(project) == []
    clock.now += 4
    press(window, "right")
    clock.now += 3
    press(window, "2")  # seconds count from when the image came on screen
    assert last_edit(project) == (paths[1], {"dog": 1}, 3.0)
    press(window, "right", "right")
    assert "last image: q ends the session" in panel_text(window)
    assert "3 / 3" in panel_text(window)


def test_the_window_shows_labels_probabilities_position_and_file_name(project_dir, project):
    project.label(project.labels()["filepath"][4], cat=1, dog=0)
    write_run(project, {"dog": [0.125] * 12, "cat": [0.875] * 12}, run_classes=["dog", "cat", "gone"])
    session = LabelSession(project, [4, 5])
    window = LabelWindow(session, plt.figure())
    text = panel_text(window)
    assert "1 / 2" in text and "img_0004.png" in text and "../images" in text
    assert "1   cat           yes    0.88" in text
    assert "2   dog           no     0.12" in text
    assert "3   bird          -      -" in text  # the run does not know bird
    session.finish()
    plt.close(window.figure)


def test_q_compacts_the_journal_and_closes_the_window(window, project):
    press(window, "1", "right", "2")
    assert len(journal(project)) == 2
    number = window.figure.number
    press(window, "q")
    assert window.session.finished and not plt.fignum_exists(number)
    assert journal(project) == []  # folded into labels.csv
    on_disk = open_project(project.directory).store.load_unlocked()
    assert on_disk.loc[0, "cat"] == 1 and on_disk.loc[1, "dog"] == 1


def test_closing_the_window_ends_the_session(window, project):
    press(window, "2")
    canvas = window.figure.canvas
    canvas.callbacks.process("close_event", CloseEvent("close_event", canvas))
    assert window.session.finished and journal(project) == []
    assert open_project(project.directory).store.load_unlocked().loc[0, "dog"] == 1


def test_matplotlib_default_keys_do_not_fire_for_ours(project):
    session = LabelSession(project, [0, 1])
    figure = plt.figure()
    LabelWindow(session, figure)
    # matplotlib's handler (h = home, left = back, q = quit ...) is disconnected
    assert figure.canvas.manager.key_press_handler_id is None
    handlers = [ref() for ref in figure.canvas.callbacks.callbacks["key_press_event"].values()]
    assert key_press_handler not in handlers
    session.finish()
    plt.close(figure)


def test_the_figure_keeps_the_window_alive(project):
    figure = plt.figure()
    LabelWindow(LabelSession(project, [0, 1]), figure)  # no reference kept, as in viewer.run
    gc.collect()
    canvas = figure.canvas
    canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, "1"))
    assert journal(project)[-1]["set"] == {"cat": 1}
    plt.close(figure)


def test_a_zoom_holds_through_edits_of_the_same_image_only(window):
    window._image_axes.set_xlim(2, 6)
    press(window, "1", "h")
    assert window._image_axes.get_xlim() == (2, 6)
    press(window, "right")
    assert window._image_axes.get_xlim() == (-0.5, 15.5)


def test_help_and_equalisation_toggles(window):
    press(window, "?")
    assert any("histogram equalisation" in t.get_text() for t in visible_texts(window._image_axes))
    press(window, "?")
    assert visible_texts(window._image_axes) == []
    original = shown(window).copy()
    press(window, "h")
    assert np.array_equal(shown(window), equalise(original)) and "equalised     on" in panel_text(window)
    press(window, "h")
    assert np.array_equal(shown(window), original)


def test_equalise_spreads_the_values_over_the_full_range_with_one_table():
    grey = np.array([[10, 10, 20, 30]], np.uint8)
    assert equalise(grey).tolist() == [[0, 0, 128, 255]]
    rgb = np.stack([grey, grey, grey], axis=-1)
    assert np.array_equal(equalise(rgb), np.stack([equalise(grey)] * 3, axis=-1))
    flat = np.full((2, 2), 7, np.uint8)
    assert np.array_equal(equalise(flat), flat)


# --- images --------------------------------------------------------------------------------


def test_grey_16_bit_rgba_and_palette_images_display_as_rgb(tmp_path, cli, clock):
    directory = tmp_path / "modes"
    directory.mkdir()
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(directory / "grey.png")
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(directory / "deep.png")
    Image.fromarray(np.array([[[255, 0, 0, 0], [0, 0, 255, 255]]], np.uint8), "RGBA").save(directory / "rgba.png")
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 128, 0, 200, 100, 50])
    palette.putpixel((1, 0), 1)
    palette.save(directory / "palette.png")
    cli("init", "proj", "--images", "modes", "--classes", "a")
    project = open_project(tmp_path / "proj")
    names = [p.rsplit("/", 1)[-1] for p in project.labels()["filepath"]]
    window = LabelWindow(LabelSession(project, range(4), clock=clock), plt.figure())
    expected = {
        "deep.png": [[0, 0, 0], [255, 255, 255]],
        "grey.png": [[0, 0, 0], [255, 255, 255]],
        "palette.png": [[0, 128, 0], [200, 100, 50]],
        "rgba.png": [[255, 255, 255], [0, 0, 255]],  # transparent over white
    }
    for name in names:
        assert shown(window).tolist() == [expected[name]], name
        press(window, "right")
    window.close()


def test_big_images_are_shrunk_for_display_with_their_aspect_kept(tmp_path):
    Image.new("RGB", (3000, 1000), (10, 20, 30)).save(tmp_path / "wide.png")
    pixels = load_display_image(str(tmp_path / "wide.png"), max_side=1600)
    assert pixels.shape == (533, 1600, 3) and pixels[0, 0].tolist() == [10, 20, 30]
    Image.new("L", (40, 90)).save(tmp_path / "small.png")
    assert load_display_image(str(tmp_path / "small.png")).shape == (90, 40, 3)


def test_an_unreadable_image_shows_its_reason_and_can_be_excluded(project_dir, project):
    broken = project.absolute_path(project.labels()["filepath"][1])
    with open(broken, "wb") as file:
        file.write(b"not a png at all")
    window = LabelWindow(LabelSession(project, [1, 2]), plt.figure())
    message = " ".join(t.get_text() for t in visible_texts(window._image_axes))
    assert "cannot show this image" in message and "not an image" in message
    assert not window._image_axes.images[0].get_visible()
    press(window, "x")
    assert last_edit(project)[1] == {"exclude": True}
    press(window, "right")
    assert shown(window).shape == (16, 16, 3) and window._image_axes.images[0].get_visible()
    assert visible_texts(window._image_axes) == []
    window.close()


def test_the_next_images_are_decoded_ahead(project):
    session = LabelSession(project, range(8))
    assert sorted(session._loading) == [0, 1, 2, 3]
    session.step(1)
    assert sorted(session._loading) == [0, 1, 2, 3, 4]
    session.step(3)
    assert sorted(session._loading) == [3, 4, 5, 6, 7]
    assert session._loading[5].result(timeout=10).pixels.shape == (16, 16, 3)
    session.finish()


# --- choosing the images ---------------------------------------------------------------------


def test_paths_match_rows_whichever_way_they_are_written(project_dir, project, tmp_path):
    table = project.labels()
    lines = [(1, "images/img_0003.png"), (2, str(tmp_path / "images" / "img_0001.png")), (4, "images/img_0003.png")]
    assert rows_for_paths(project, table, lines, "list.txt", cwd=tmp_path) == [3, 1]
    # as stored in labels.csv (what `patchwork sample` prints), from any working directory
    assert rows_for_paths(project, table, [(1, "../images/img_0005.png")], "-", cwd=tmp_path) == [5]
    with pytest.raises(PatchworkError, match=r"^list.txt, line 7: 'images/nope.png' is not an image of this project$"):
        rows_for_paths(project, table, [(1, "images/img_0000.png"), (7, "images/nope.png")], "list.txt", cwd=tmp_path)


def test_label_paths_with_an_unknown_path_names_it_and_changes_nothing(project_dir, cli, tmp_path):
    (tmp_path / "queue.txt").write_text("# from sample\nimages/img_0000.png\n\nimages/missing.png\n")
    before = snapshot(project_dir)
    result = cli("--project", "proj", "label", "--paths", "queue.txt", expect=1)
    assert result.stderr == "error: queue.txt, line 4: 'images/missing.png' is not an image of this project\n"
    result = cli("--project", "proj", "label", "--paths", "-", input="images/nope.png\n", expect=1)
    assert "<stdin>, line 1: 'images/nope.png'" in result.stderr
    assert snapshot(project_dir) == before


def test_label_paths_edge_cases(project_dir, cli):
    assert cli("--project", "proj", "label", "--paths", "-", input="\n").stderr == "nothing to label\n"
    result = cli("--project", "proj", "label", "--paths", "-", "--strategy", "random", expect=2)
    assert "--paths chooses the images itself" in result.stderr
    result = cli("--project", "proj", "label", "--paths", "absent.txt", expect=1)
    assert result.stderr == "error: absent.txt: no such file or directory\n"


def test_label_samples_with_the_strategy_and_filters(project_dir, cli):
    # the sample is drawn (or refused) before any window opens
    result = cli("--project", "proj", "label", "--strategy", "random", "-n", "3", "--seed", "1", expect=1)
    assert "no display for the labelling window" in result.stderr
    result = cli("--project", "proj", "label", "--strategy", "maxent", expect=1)
    assert result.stderr.startswith("error: no trained model yet: strategy 'maxent'")
    assert cli("--project", "proj", "label", "--from", "labeled").stderr == "nothing to label\n"


def test_without_a_display_the_window_refuses_clearly(project_dir, cli):
    before = snapshot(project_dir)
    result = cli("--project", "proj", "label", "--paths", "-", input="images/img_0002.png\n", expect=1)
    assert result.stderr.startswith("error: no display for the labelling window (matplotlib backend 'Agg')")
    assert snapshot(project_dir) == before


@pytest.mark.slow
def test_label_does_not_import_tensorflow(project_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    (tmp_path / "queue.txt").write_text("images/img_0000.png\n")
    report = probe("--project", "proj", "label", "--paths", "queue.txt", cwd=tmp_path)
    assert report["code"] == 1 and not report["tensorflow"]


# --- helpers -----------------------------------------------------------------------------------


def write_run(project, probabilities: dict[str, list[float]], run_classes: list[str]) -> None:
    """A published run whose predictions hold `probabilities` (class -> one value per row)."""
    run_id = runs.new_run_id()
    staging = runs.staging_dir(project.directory, run_id)
    rows = len(next(iter(probabilities.values())))
    values = np.full((rows, len(run_classes)), np.nan, np.float32)
    for name, column in probabilities.items():
        values[:, run_classes.index(name)] = column
    zarr.create_array(str(staging / runs.PREDICTIONS_NAME), data=values)
    runs.write_json(staging / runs.RUN_FILE, {"run_id": run_id, "classes": run_classes})
    runs.publish(project.directory, staging, run_id)
