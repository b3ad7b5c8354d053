"""The ESBN relational tasks (same/different, relational match-to-sample, distribution-of-three,
identity rules) over 100 glyphs with held-out objects, as used by CoRelNet (arXiv 2206.05056) and
Compositional Attention (arXiv 2110.09419)."""

from datamodules.relational.datamodule import RelationalTaskDataModule
from datamodules.relational.esbn_tasks import (
    TASKS,
    DistributionOfThree,
    IdentityRules,
    RelationalMatchToSample,
    RelationalTask,
    SameDifferent,
    TaskSplits,
    Trials,
    generate_splits,
    make_task,
    resolve_sizes,
)
from datamodules.relational.glyphs import load_glyphs

__all__ = [
    "RelationalTaskDataModule",
    "RelationalTask",
    "SameDifferent",
    "RelationalMatchToSample",
    "DistributionOfThree",
    "IdentityRules",
    "TASKS",
    "Trials",
    "TaskSplits",
    "make_task",
    "resolve_sizes",
    "generate_splits",
    "load_glyphs",
]
