"""The project on disk: patchwork.yaml, labels.csv and its journal, features.zarr, and the runs under models/."""
