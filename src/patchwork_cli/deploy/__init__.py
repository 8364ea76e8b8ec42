"""What leaves the project: the end-to-end model, export, and predict on new images."""
