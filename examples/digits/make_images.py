"""How the bundled example images were made (kept for provenance; needs scikit-learn).

scikit-learn's load_digits holds 1,797 real 8x8 scans of handwritten digits (UCI
optical recognition of handwritten digits). The first 200 are written here as
32x32 grayscale PNGs, with their true labels in truth.csv for the scripted oracle.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COUNT = 200

here = Path(__file__).parent
digits = load_digits()
(here / "images").mkdir(exist_ok=True)
rows = ["filepath," + ",".join(NAMES)]
for i in range(COUNT):
    pixels = (digits.images[i] / 16.0 * 255).astype(np.uint8)
    name = f"images/digit_{i:04d}.png"
    Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).save(here / name, optimize=True)
    onehot = ["1" if k == digits.target[i] else "0" for k in range(10)]
    rows.append(f"examples/digits/{name}," + ",".join(onehot))
(here / "truth.csv").write_text("\n".join(rows) + "\n")
