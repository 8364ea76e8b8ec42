"""Pretrained feature extractors: networks that turn image pixels into feature maps."""

from ..tensorflow_runtime import start_tensorflow

start_tensorflow()
