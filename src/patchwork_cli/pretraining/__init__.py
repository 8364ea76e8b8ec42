"""The pretrain stage: adapting the extractor to the project's own images without labels (SimCLR)."""
