"""What a run depends on, for `train --if-changed`: the images, their labels, the config (with the
command line's --head and --seed in it) and which features exist."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd

from patchwork_cli.store import runs
from patchwork_cli.store.config import Config
from patchwork_cli.store.features import FeatureStore
from patchwork_cli.store.label_schema import EXCLUDE, FILEPATH, VALIDATION
from patchwork_cli.store.project import Project
from patchwork_cli.store.rowindex import rows_digest


def fingerprint(table: pd.DataFrame, config: Config, store: FeatureStore | None) -> str:
    """What a run depends on: the images and their labels, the config, and which features exist.
    Order counts: a labels.csv sorted by hand makes a new run (which predicts what the old one did)."""
    digest = hashlib.sha256()
    filepaths = table[FILEPATH].tolist()
    digest.update(rows_digest(filepaths).encode())
    digest.update(table[config.classes].to_numpy(np.float64).tobytes())
    digest.update(table[EXCLUDE].to_numpy(bool).tobytes() + table[VALIDATION].to_numpy(bool).tobytes())
    # where the features are stored and how to reach the cluster are not what a run depends on:
    # the features' identity and status are
    # (nor pretrain's settings: a pretrained extractor reaches a run through the features' identity)
    settings = {
        key: value for key, value in dataclasses.asdict(config).items() if key not in ("storage", "dask", "pretrain")
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    if store is not None:
        digest.update(json.dumps(store.identity, sort_keys=True).encode())
        digest.update(store.table_status(store.match(filepaths)).tobytes())
    return digest.hexdigest()


def is_unchanged(project: Project, *, head: str | None = None, seed: int | None = None) -> bool:
    """True when LATEST was trained on exactly the current labels, config and features."""
    latest = runs.latest_run(project.directory)
    if latest is None:
        return False
    recorded = runs.RunRecord.read(runs.models_dir(project.directory) / latest).fingerprint
    config = with_options(project.config, head=head, seed=seed)
    return recorded == fingerprint(project.labels(), config, FeatureStore.open(project.features_location))


def with_options(config: Config, *, head: str | None, seed: int | None) -> Config:
    """The config with the command line's --head and --seed in place of model.head and training.seed
    (so that the run's config.yaml and fingerprint say what it was trained with)."""
    if head is not None:
        from patchwork_cli.modeling.spec import parse_head_spec

        parse_head_spec(head)  # a bad --head is an error before anything else happens
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, head=head))
    if seed is not None:
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, seed=seed))
    return config
