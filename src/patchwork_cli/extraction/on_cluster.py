"""extract on a Dask cluster: the coordinator's side (one task per chunk) and the task's body.

A worker loads its own extractor and engine from an ExtractorSpec on its first task, keeps
it for the next ones, and checks it against the store's identity before writing anything. The
spec carries the runtime the coordinator chose (and reported): every worker runs that one, or
refuses to run, rather than choosing again.
"""

from __future__ import annotations

from dataclasses import dataclass

from patchwork_cli.distributed.tasks import load_once, run_chunk_tasks
from patchwork_cli.errors import PatchworkError
from patchwork_cli.extraction.chunks import extract_chunk
from patchwork_cli.extractors.runtimes import RuntimeChoice, cannot_run, open_extractor_engine
from patchwork_cli.store.features import FeatureStore, identity_difference
from patchwork_cli.store.project import Project


@dataclass(frozen=True)
class ExtractorSpec:
    """What loads an extractor: small and picklable, so a Dask worker can load its own copy
    (and keep it for every task with an equal spec)."""

    name: str  # efficientnet_lite0, keras:NAME or an absolute model path
    imshape: tuple[int, int]
    pooling: str | None
    choice: RuntimeChoice  # what runs it, chosen once by the coordinator
    batch_size: int

    @classmethod
    def of(cls, project: Project, name: str, choice: RuntimeChoice) -> ExtractorSpec:
        """The spec of an extractor that loaded here, run as `choice` says. A model file (relative to
        the project) is named by its absolute path: the same file on every worker, whatever its
        working directory."""
        model_file = project.directory / name
        settings = project.config.extractor
        return cls(
            str(model_file) if model_file.is_file() else name,
            tuple(project.config.imshape),
            settings.pooling,
            choice,
            settings.batch_size,
        )

    def load(self):
        """(the Extractor, the Engine that runs it); refused on a worker that cannot run the choice."""
        from patchwork_cli.extractors.loading import load_extractor  # TensorFlow starts here

        why = cannot_run(self.choice)
        if why:
            raise PatchworkError(
                f"this worker cannot run the extractor on {self.choice.runtime}, as the coordinator chose: {why}; "
                "every worker needs the same patchwork install and model files"
            )
        extractor = load_extractor(self.name, self.imshape, self.pooling)
        return extractor, open_extractor_engine(extractor, self.choice, self.batch_size)


def extract_on_cluster(
    client, location: str, chunks: list[int], pending: int, paths: list[str | None], spec: ExtractorSpec, progress
) -> tuple[int, int]:
    """extract_chunk for every chunk of `chunks` (holding `pending` rows to extract, for the progress
    bar) as Dask tasks; (processed, failed). `paths` holds the image of each store row, None for a
    row to leave alone."""
    store = FeatureStore.open(location)
    arguments = []
    for index in chunks:
        start, stop = store.chunk_bounds(index)
        arguments.append((location, index, paths[start:stop], spec))
    results = run_chunk_tasks(
        client,
        extract_chunk_task,
        arguments,
        total=pending,
        desc="extract",
        unit="img",
        count=lambda result: result[0],
        progress=progress,
    )
    return sum(r[0] for r in results), sum(r[1] for r in results)


def extract_chunk_task(location: str, index: int, paths: list[str | None], spec: ExtractorSpec) -> tuple[int, int]:
    """One Dask task: chunk `index` of the store at `location`, on this worker's extractor."""
    store = FeatureStore.open(location, writable=True)
    extractor, engine = load_once("extractor", spec, spec.load)
    identity = extractor.identity(store.identity["dtype"], engine.precision)
    if identity != store.identity:
        raise PatchworkError(
            f"the extractor {spec.name!r} on this worker differs from the coordinator's "
            f"({identity_difference(store.identity, identity, 'there')}); "
            "every worker needs the same patchwork install and model files"
        )
    return extract_chunk(store, index, paths, extractor, engine)
