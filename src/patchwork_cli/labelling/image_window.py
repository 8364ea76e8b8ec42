"""The single-image labelling window: one image large with its labels beside it; everything
on the keyboard (labelling/window.py has what it shares with the grid)."""

from __future__ import annotations

import os

import numpy as np

from patchwork_cli.labelling.drawcache import add_text
from patchwork_cli.labelling.session import CLASS_KEYS, LabelSession
from patchwork_cli.labelling.window import (
    FLAG_COLOUR,
    NAME_WIDTH,
    NOTICE_COLOUR,
    PANEL_WIDTH,
    UNDO_KEYS,
    VALUE_COLOUR,
    PictureArtists,
    TextLines,
    Window,
    shorten,
)
from patchwork_cli.store.label_schema import EXCLUDE, VALIDATION

VALUE_TEXT = {None: "-", 1: "yes", 0: "no"}


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
        ("enter", "accept the suggestion (disagree), next image"),
        ("right  space", "next image"),
        ("left  backspace", "previous image"),
        ("h", "histogram equalisation on / off"),
        ("o  p  r", "zoom, pan, reset view"),
        ("?", "this help"),
        ("q", "quit (or close the window)"),
    )


class LabelWindow(Window):
    """Draws a LabelSession one image at a time and edits it from key presses."""

    def __init__(self, session: LabelSession, figure, title: str = "patchwork label"):
        super().__init__(session, figure, title)
        self.equalised = False
        self.show_help = False
        self._drawn: tuple[int, bool] | None = None  # (position, equalised) of the picture on screen
        axes = self._image_axes = figure.add_axes((0.01, 0.02, 0.67, 0.92))
        axes.set_axis_off()
        self._picture = PictureArtists(axes, "cannot show this image\n\n{}\n\nx excludes it", fontsize=13)
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
            "enter": self._accept,
            "left": lambda: self._step(-1),
            "backspace": lambda: self._step(-1),
            "h": self._toggle_equalised,
            "?": self._toggle_help,
            "q": self.close,
        }

    def _class_key(self, index: int) -> None:
        if self.session.class_key(index):
            self._step(1)

    def _accept(self) -> None:
        """enter: the suggestion, where the image has one, then the next image."""
        self.session.accept_suggestion()
        self._step(1)

    def _rest_negative(self) -> None:
        if self.session.rest_negative():
            self._step(1)

    def _undo(self) -> None:
        if self.session.undo():
            self.notice = f"undone: {shorten(os.path.basename(self.session.current.filepath), PANEL_WIDTH - 8)}"
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
        lines = TextLines(panel)
        self.position = lines.add(size=20, weight="bold")
        self.name = lines.add(size=13)
        self.folder = lines.add(size=10, colour="0.45")
        lines.gap()
        lines.add(f"{'key':<4}{'class':<{NAME_WIDTH}}{'label':<7}model", colour="0.45")
        self.classes = [lines.add() for _ in classes]
        lines.gap()
        self.exclude = lines.add()
        self.validation = lines.add()
        self.suggestion = lines.add(colour=NOTICE_COLOUR)
        lines.gap()
        self.equalised = lines.add(colour="0.45")
        lines.add(f"{'?':<4}keys", colour="0.45")
        lines.gap()
        self.notice = lines.add(colour=NOTICE_COLOUR)

    def show(self, session: LabelSession, equalised: bool, notice: str) -> None:
        image = session.current
        self.position.set_text(f"{session.position + 1} / {len(session)}")
        self.name.set_text(shorten(os.path.basename(image.filepath), PANEL_WIDTH))
        self.folder.set_text(shorten(os.path.dirname(image.filepath) or ".", PANEL_WIDTH * 13 // 10))
        for index, (line, name) in enumerate(zip(self.classes, session.classes, strict=True)):
            value, probability = image.values[name], image.probabilities[name]
            line.set_text(
                f"{_class_key(index):<4}{shorten(name):<{NAME_WIDTH}}{VALUE_TEXT[value]:<7}"
                f"{'-' if np.isnan(probability) else f'{probability:.2f}'}"
            )
            line.set_color(VALUE_COLOUR[value])
            line.set_fontweight("bold" if value is not None else "normal")
        for line, key, name, state in (
            (self.exclude, "x", EXCLUDE, image.exclude),
            (self.validation, "v", VALIDATION, image.validation),
        ):
            line.set_text(f"{key:<4}{name:<{NAME_WIDTH}}{'yes' if state else 'no'}")
            line.set_color(FLAG_COLOUR[state])
        self.suggestion.set_text(_suggestion_text(image.suggestion))
        self.equalised.set_text(f"{'h':<4}{'equalised':<{NAME_WIDTH}}{'on' if equalised else 'off'}")
        self.notice.set_text(notice)


def _suggestion_text(suggestion: tuple[str, int] | None) -> str:
    """The panel's line for a suggested label: what enter accepts."""
    if suggestion is None:
        return ""
    name, value = suggestion
    return f"enter: {shorten(name, NAME_WIDTH)} {VALUE_TEXT[value]}"


def _class_key(index: int) -> str:
    """The key of the index-th class; classes after the tenth have none (label them with --import)."""
    return CLASS_KEYS[index] if index < len(CLASS_KEYS) else ""
