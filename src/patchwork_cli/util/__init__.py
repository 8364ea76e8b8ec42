"""Helpers that know nothing of projects: atomic writes, locks, checksums, image decoding, starting TensorFlow."""
