"""The extract stage: images through the extractor's engine into features.zarr, chunk by chunk."""
