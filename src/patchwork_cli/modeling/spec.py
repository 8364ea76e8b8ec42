"""The ``model.head`` grammar, parsed into a HeadSpec (pure Python: no TensorFlow here).

    auto                   the default: pool:avg on feature maps, flatten (a linear head) on vectors
    pool:avg | pool:max    global average / max pooling of a feature map
    flatten                flatten a feature map; on vector features the vector is used as is
    mlp:256,128            dense ReLU layers of those widths; a feature map is average-pooled first
    conv:128,p,d,r,128     the original patchwork grammar: an integer is a convolution with that
                           many filters, p a 2x2 max pool, d a spatial dropout, r a residual block;
                           the result is average-pooled into a vector
    labelprop              no network: the labels propagated over a k-nearest-neighbour graph of
                           the pooled features (labelprop.py; model.labelprop_* in the config)

Every network head ends in a vector (the "embedding") that a dense layer maps to the class logits.
Errors are one line and point at the offending token.
"""

from __future__ import annotations

from dataclasses import dataclass

from patchwork_cli.errors import PatchworkError

AUTO, POOL, FLATTEN, MLP, CONV, LABELPROP = "auto", "pool", "flatten", "mlp", "conv", "labelprop"
POOLINGS = ("avg", "max")
MAX_POOL, SPATIAL_DROPOUT, RESIDUAL = "p", "d", "r"
EXPECTED_HEADS = "auto, pool:avg, pool:max, flatten, mlp:W,..., conv:..., labelprop"
# What `auto` stands for: on maps, the spatial average then a dense layer; on vectors (pooled at
# extraction, or imported with extract --from-npy) the same linear model on the vector as it is.
AUTO_ON_MAPS, AUTO_ON_VECTORS = "pool:avg", "flatten"


@dataclass(frozen=True)
class HeadSpec:
    """A parsed head. Only the fields of its `kind` are set."""

    text: str  # as the user wrote it, for messages
    kind: str  # AUTO, POOL, FLATTEN, MLP, CONV or LABELPROP
    pooling: str | None = None  # POOL: "avg" or "max"
    widths: tuple[int, ...] = ()  # MLP: dense layer widths
    steps: tuple[int | str, ...] = ()  # CONV: filter counts and MAX_POOL / SPATIAL_DROPOUT / RESIDUAL

    @property
    def needs_feature_map(self) -> bool:
        return self.kind in (POOL, CONV)


def is_labelprop(head: str) -> bool:
    """Whether the head `head` (model.head, or run.json's `head`) propagates labels instead of
    training a model: such a run has no model.keras."""
    return head.strip() == LABELPROP


def resolve_head(text: str, feature_shape: tuple[int, ...]) -> str:
    """The head that `text` stands for on features of `feature_shape`: `auto` picks the one that
    fits (AUTO_ON_MAPS on (h, w, c) maps, AUTO_ON_VECTORS on (d,) vectors); any other head is itself."""
    if text.strip() != AUTO:
        return text
    return AUTO_ON_MAPS if len(tuple(feature_shape)) == 3 else AUTO_ON_VECTORS


def parse_head_spec(text: str) -> HeadSpec:
    """Parse a head such as 'pool:avg' or 'conv:128,p,d,r,128'; PatchworkError if it is malformed."""
    text = text.strip()
    kind, colon, arguments = text.partition(":")
    if kind == AUTO:
        if colon:
            raise PatchworkError(f"head {text!r}: auto takes no arguments")
        return HeadSpec(text, AUTO)
    if kind == POOL:
        if arguments not in POOLINGS:
            raise PatchworkError(f"head {text!r}: expected pool:avg or pool:max")
        return HeadSpec(text, POOL, pooling=arguments)
    if kind == FLATTEN:
        if colon:
            raise PatchworkError(f"head {text!r}: flatten takes no arguments")
        return HeadSpec(text, FLATTEN)
    if kind == LABELPROP:
        if colon:
            raise PatchworkError(f"head {text!r}: labelprop takes no arguments (its settings are model.labelprop_*)")
        return HeadSpec(text, LABELPROP)
    if kind == MLP:
        return HeadSpec(text, MLP, widths=_parse_tokens(text, arguments, _positive_integer, "a layer width"))
    if kind == CONV:
        return HeadSpec(text, CONV, steps=_parse_tokens(text, arguments, _conv_step, "a filter count, p, d or r"))
    raise PatchworkError(f"unknown head {text!r} (expected {EXPECTED_HEADS})")


def check_feature_shape(spec: HeadSpec, shape: tuple[int, ...]) -> None:
    """Refuse feature shapes the head cannot take: only maps (h, w, c) and vectors (d,) exist,
    and pooling or convolving needs a map."""
    shape = tuple(shape)
    if len(shape) not in (1, 3):
        raise PatchworkError(
            f"features of shape {shape} are neither a feature map (height, width, channels) nor a vector"
        )
    if len(shape) == 1 and spec.needs_feature_map:
        raise PatchworkError(
            f"head {spec.text!r} needs feature maps (height, width, channels) but the features are vectors "
            f"of length {shape[0]}; use flatten or mlp:W,... (or extract again with extractor.pooling: null)"
        )


def _parse_tokens(text: str, arguments: str, parse_token, expected: str) -> tuple:
    """The comma-separated tokens after 'kind:', each through `parse_token` (None means bad token)."""
    parsed = []
    for number, token in enumerate(arguments.split(","), start=1):
        token = token.strip()
        value = parse_token(token)
        if value is None:
            raise PatchworkError(f"head {text!r}: token {number} {token!r} is not {expected}")
        parsed.append(value)
    return tuple(parsed)


def _positive_integer(token: str) -> int | None:
    # isascii: str.isdigit also accepts characters like '²' that int() refuses
    if token.isascii() and token.isdigit() and int(token) > 0:
        return int(token)
    return None


def _conv_step(token: str) -> int | str | None:
    if token in (MAX_POOL, SPATIAL_DROPOUT, RESIDUAL):
        return token
    return _positive_integer(token)
