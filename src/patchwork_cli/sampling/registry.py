"""The sampling strategies, one record each: what `--strategy` accepts and what each one is.

Pure Python, no numpy: `patchwork --help` and `patchwork sample --help` build their text from
these records without loading what the strategies run on. Each record names its function in
sampling/strategies.py, which looks the name up there (every record's function exists and
every strategy function has a record: tests/test_sampling_strategies.py). A new strategy is a
record here and its function there.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# What a strategy reads besides the label table: the run's predictions or embeddings (so it
# needs a trained model), or the store's reduced copy of the extracted features.
Source = Literal["predictions", "embeddings", "features"]
FROM_RUN: tuple[Source, ...] = ("predictions", "embeddings")


@dataclasses.dataclass(frozen=True)
class StrategyRecord:
    name: str  # as --strategy spells it, ":C" for a class: "maxent:C"
    reads: tuple[Source, ...]  # () for nothing but the label table
    seeded: bool  # its picks depend on --seed
    function: str  # its function in sampling/strategies.py: (pool, k, rng) -> Picks
    help: str  # one line of `patchwork sample --help`

    @property
    def base(self) -> str:
        """The name without its class: `high` of `high:C`."""
        return self.name.partition(":")[0]


RECORDS = (
    StrategyRecord("random", reads=(), seeded=True, function="choose_random", help="a uniform draw"),
    StrategyRecord(
        "maxent",
        reads=("predictions",),
        seeded=False,
        function="choose_maxent",
        help="top n by the most uncertain class's entropy",
    ),
    StrategyRecord(
        "maxent+sum",
        reads=("predictions",),
        seeded=False,
        function="choose_maxent_sum",
        help="top n by the classes' summed entropy",
    ),
    StrategyRecord(
        "maxent:C",
        reads=("predictions",),
        seeded=False,
        function="choose_maxent_class",
        help="top n by the entropy of class C",
    ),
    StrategyRecord(
        "high:C",
        reads=("predictions",),
        seeded=True,
        function="choose_high",
        help="a draw weighted by p(C): likely positives",
    ),
    StrategyRecord(
        "low:C",
        reads=("predictions",),
        seeded=True,
        function="choose_low",
        help="a draw weighted by 1 - p(C): likely negatives",
    ),
    StrategyRecord(
        "badge",
        reads=("predictions", "embeddings"),
        seeded=True,
        function="choose_badge",
        help="k-means++ seeding on the gradient embeddings",
    ),
    StrategyRecord(
        "coreset",
        reads=("embeddings",),
        seeded=False,
        function="choose_coreset",
        help="greedy k-center on the embeddings",
    ),
    StrategyRecord(
        "disagree",
        reads=("predictions",),
        seeded=False,
        function="choose_disagree",
        help="labelled rows, the likeliest wrong label first",
    ),
    StrategyRecord(
        "margin",
        reads=("predictions",),
        seeded=False,
        function="choose_margin",
        help="top n by the gap between the two likeliest outcomes",
    ),
    StrategyRecord(
        "cluster-margin",
        reads=("predictions", "embeddings"),
        seeded=True,
        function="choose_cluster_margin",
        help="the most uncertain (margin) of each embedding cluster",
    ),
    StrategyRecord(
        "typiclust",
        reads=("features",),
        seeded=True,
        function="choose_typiclust",
        help="the most typical image of each uncovered cluster",
    ),
    StrategyRecord(
        "probcover",
        reads=("features",),
        seeded=True,
        function="choose_probcover",
        help="greedy coverage of balls around the features",
    ),
    # auto draws and reads nothing itself: auto_strategy resolves it to another strategy first,
    # which reads what it reads and takes --seed if it does.
    StrategyRecord(
        "auto",
        reads=(),
        seeded=False,
        function="choose_auto",
        help="typiclust first, then cluster-margin (multiclass) or badge",
    ),
)
STRATEGIES = tuple(record.name for record in RECORDS)
BY_NAME = {record.name: record for record in RECORDS}


def reading(source: Source) -> tuple[str, ...]:
    """The names of the strategies that read `source`."""
    return tuple(record.name for record in RECORDS if source in record.reads)


def listing() -> str:
    """Every name, in the order the help and the errors give them."""
    return ", ".join(STRATEGIES)


def seeded_listing() -> str:
    """The strategies --seed reaches, without their class: `high`, not `high:C`."""
    return ", ".join(record.base for record in RECORDS if record.seeded)


def described() -> str:
    """One line per strategy, its name and what it does, aligned."""
    width = max(map(len, STRATEGIES))
    return "\n".join(f"{record.name:<{width}}  {record.help}" for record in RECORDS)
