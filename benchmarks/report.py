"""What every benchmark prints: a title, then one row per measure with its value, its
target and PASS/FAIL where it has one; or, with --json, the figures with targets and
verdicts. `targets` maps a figure's key to (shown target, test)."""

from __future__ import annotations

import json
from collections.abc import Callable

Targets = dict[str, tuple[str, Callable[[object], bool]]]


def verdicts(figures: dict, targets: Targets) -> dict[str, str]:
    return {key: "PASS" if passes(figures[key]) else "FAIL" for key, (_, passes) in targets.items()}


def as_json(figures: dict, targets: Targets, indent: int | None = 2) -> str:
    shown = {key: target for key, (target, _) in targets.items()}
    return json.dumps({**figures, "targets": shown, "verdicts": verdicts(figures, targets)}, indent=indent)


def print_table(title: str, labels: dict[str, str], figures: dict, targets: Targets, digits: int = 3) -> None:
    """`labels` maps each figure's key to its row label, in print order."""
    verdict = verdicts(figures, targets)
    width = max(len(label) for label in labels.values()) + 2
    print(title)
    print(f"{'measure':<{width}} {'value':>10}  {'target':<9} verdict")
    for key, label in labels.items():
        value = figures[key]
        shown = ("yes" if value else "no") if isinstance(value, bool) else f"{value:.{digits}f}"
        target = targets.get(key, ("",))[0]
        print(f"{label:<{width}} {shown:>10}  {target:<9} {verdict.get(key, '')}".rstrip())
