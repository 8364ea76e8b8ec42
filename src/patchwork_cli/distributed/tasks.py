"""A stage's chunk tasks on a Dask cluster: submit one task per chunk, gather what they report.

Generic on purpose: the stages own their task bodies (extraction/on_cluster.py,
training/prediction.py) and hand them here with one argument tuple per chunk. A task works on
one whole chunk of the feature store (and of a run's arrays), the unit zarr writes atomically,
so tasks never touch each other's files, and a task run twice (the scheduler retries the
tasks of a worker that died) writes the same bytes again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from tqdm import tqdm

from patchwork_cli.errors import PatchworkError


def run_chunk_tasks(
    client,
    task: Callable,
    arguments: Sequence[tuple],
    *,
    total: int,
    desc: str,
    unit: str,
    count: Callable[[object], int],
    progress: bool | None,
) -> list:
    """`task(*args)` for each tuple of `arguments` as Dask tasks; their results as they finish,
    with a progress bar over `total` `unit`s (`count(result)` of them per result). The first
    failure cancels the rest and becomes one clear error; the chunks written so far stay written."""
    from dask.distributed import as_completed

    futures = [client.submit(task, *args, pure=False) for args in arguments]
    results = []
    with tqdm(total=total, unit=unit, desc=desc, disable=None if progress is None else not progress) as bar:
        try:
            for future in as_completed(futures):
                results.append(future.result())
                bar.update(count(results[-1]))
        except Exception as error:
            client.cancel(futures)
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise PatchworkError(
                f"{desc} on the Dask cluster stopped: {type(error).__name__}: {reason}; "
                "the chunks finished so far are saved, run the same command again to go on"
            ) from None
    return results


# --- the worker side: each worker process loads a model on its first task and keeps it --------

_loaded: dict[str, tuple[object, object]] = {}
_loading = threading.Lock()


def load_once(kind: str, key, load: Callable):
    """The model of `kind` for `key`, loaded on this worker's first task that needs it and kept
    for the next ones; a new key (another extractor, the next run's head) replaces it."""
    with _loading:
        held = _loaded.get(kind)
        if held is None or held[0] != key:
            _loaded.pop(kind, None)  # let the old model go before the new one is built
            _loaded[kind] = (key, load())
        return _loaded[kind][1]
