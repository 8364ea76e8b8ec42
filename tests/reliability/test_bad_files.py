"""Hostile files and names: fuzzed image bytes must decode or fail with an ImageError (never
another exception, which would stop a million-image extract), and paths with spaces, unicode,
commas, quotes, newlines and leading dashes survive every command."""

from __future__ import annotations

import collections
import io
import subprocess
import sys

import numpy as np
import pytest
from builders import Cli
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from patchwork_cli.store.project import Project
from patchwork_cli.util.images import ImageError, load_image
from reliability.builders import report


def encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    mode = {"GIF": "P", "TIFF": "RGBA"}.get(fmt, "RGB")
    Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = {fmt: encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


@st.composite
def mutated_images(draw) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[fmt])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "big number"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:  # widths, heights, lengths and offsets taken to extremes
            data[at : at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]))
        if not data:
            break
    return fmt, bytes(data)


@pytest.mark.slow
def test_fuzzed_image_bytes_decode_or_fail_cleanly(tmp_path):
    outcomes = collections.Counter()
    path = tmp_path / "image"

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(mutated_images())
    def check(case):
        fmt, data = case
        path.write_bytes(data)
        try:
            pixels = load_image(str(path), (8, 8))
        except ImageError as error:
            assert str(error), "an ImageError needs a reason"
            outcomes[f"{fmt}: refused"] += 1
            return
        assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
        outcomes[f"{fmt}: decoded"] += 1

    check()
    report("image byte mutations (hypothesis)", examples=sum(outcomes.values()), **dict(sorted(outcomes.items())))


ODD_NAMES = [
    "with space.png",
    "-leading-dash.png",
    "--help.png",
    "ünïcödé 猫.png",
    "comma,and\"quote'.png",
    "new\nline.png",
    "#hash.png",
    " leading space.png",
]


@pytest.mark.slow
def test_odd_paths_survive_every_command(tmp_path):
    images = tmp_path / "odd dir -x"
    images.mkdir()
    for i, name in enumerate(ODD_NAMES):
        Image.new("RGB", (4, 4), (i, 0, 0)).save(images / name)
    cli = Cli(tmp_path)
    cli("init", "proj", "--images", "odd dir -x", "--classes", "a,b")
    project = tmp_path / "proj"
    stored = Project(project).labels()["filepath"].tolist()
    assert sorted(p.split("/")[-1] for p in stored) == sorted(ODD_NAMES)
    edits = tmp_path / "edits.csv"
    Project(project).labels()[["filepath"]].assign(a=1).to_csv(edits, index=False)
    cli("--project", "proj", "label", "--import", "edits.csv")
    np.save(tmp_path / "f.npy", np.ones((len(ODD_NAMES), 4), np.float32))
    cli("--project", "proj", "extract", "--from-npy", "f.npy")
    table = Project(project).labels()
    assert table["filepath"].tolist() == stored and (table["a"] == 1).all()
    for name in ODD_NAMES:
        assert load_image(str(images / name)).shape == (4, 4, 3)
    # the real executable: a list whose name starts with a dash needs `--`, like any command's argument
    (tmp_path / "-later.png").write_bytes((images / "with space.png").read_bytes())
    (tmp_path / "-list.txt").write_text("-later.png\n")
    result = subprocess.run(
        [sys.executable, "-m", "patchwork_cli", "--project", "proj", "add", "--", "-list.txt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Project(project).labels()["filepath"].iloc[-1] == "../-later.png"
    report("odd paths", names=len(ODD_NAMES) + 1, commands="init, label --import, extract --from-npy, add, status")
