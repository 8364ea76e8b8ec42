"""Real handwritten digits as PNG files, with their true labels for the scripted oracle.

scikit-learn's load_digits holds 1,797 real 8x8 scans of handwritten digits (UCI
optical recognition of handwritten digits); they install with scikit-learn, so no
download is needed. Each is written as a 32x32 grayscale PNG, and truth.csv lists
every file with one 0/1 column per digit name.

    python examples/digits/make_images.py                 # the bundled 200 (this directory)
    python examples/digits/make_images.py OUT_DIR 1000     # the quickstart's 1,000
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_digits(out: Path, count: int) -> Path:
    """The first `count` digits as out/images/digit_NNNN.png; returns out/truth.csv."""
    digits = load_digits()
    if not 1 <= count <= len(digits.images):
        raise SystemExit(f"count must be between 1 and {len(digits.images)}, got {count}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = ["filepath," + ",".join(NAMES)]
    for i in range(count):
        pixels = (digits.images[i] / 16.0 * 255).astype(np.uint8)
        path = out / "images" / f"digit_{i:04d}.png"
        Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).save(path, optimize=True)
        onehot = ["1" if k == digits.target[i] else "0" for k in range(10)]
        rows.append(f"{path.as_posix()}," + ",".join(onehot))
    truth = out / "truth.csv"
    truth.write_text("\n".join(rows) + "\n")
    return truth


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write scikit-learn's digits as PNG files plus truth.csv.")
    parser.add_argument("out", type=Path, nargs="?", default=Path("examples/digits"))
    parser.add_argument("count", type=int, nargs="?", default=200)
    arguments = parser.parse_args()
    print(write_digits(arguments.out, arguments.count))
