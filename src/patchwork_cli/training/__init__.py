"""The train stage: a head fitted on the stored features, scored, and published as a run."""
