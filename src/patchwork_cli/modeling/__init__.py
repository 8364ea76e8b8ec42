"""The trainable part of patchwork: a small Keras head on top of pre-extracted features.

- ``spec``: parse and check the ``model.head`` grammar (pure Python, so a bad ``--head``
  is reported before TensorFlow is imported);
- ``heads``: build the Keras model (features -> "embedding" -> "logits" -> "probabilities");
- ``losses``: the masked multi-label loss for partially labelled rows.

Import the submodules directly; this package imports nothing so that ``spec`` stays light.
"""
