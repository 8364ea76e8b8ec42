"""Pretrained feature extractors: networks that turn image pixels into feature maps."""
