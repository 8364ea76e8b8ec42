"""The tasks a project can be: how labels.csv's class columns are read.

multilabel: independent classes (one sigmoid each); multiclass: exactly one class per image
(a softmax). labels.csv has the same format for both. A module of its own, importing nothing,
so that `patchwork init`'s --task choices cost the command line no import of the config parser.
"""

from typing import Literal, get_args

Task = Literal["multilabel", "multiclass"]
TASKS: tuple[str, ...] = get_args(Task)
MULTILABEL, MULTICLASS = TASKS
