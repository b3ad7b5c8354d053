"""The relational tasks of CoRelNet (arXiv 2206.05056): ESBN's four tasks (same/different,
relational match-to-sample, distribution-of-three, identity rules) over 100 glyphs with held-out
objects, as Compositional Attention (arXiv 2110.09419) uses them too; CoRelNet's variants with
held-out relations, longer rows and coloured objects; and Relational Games (arXiv 1905.10307)."""

from tenfold.datamodules.relational.coloured_tasks import (
    COLOURED_TASKS,
    ColouredTask,
    colour_palette,
    generate_coloured_splits,
)
from tenfold.datamodules.relational.corelnet_tasks import CORELNET_TASKS, LetterTask
from tenfold.datamodules.relational.datamodule import RelationalTaskDataModule
from tenfold.datamodules.relational.esbn_tasks import (
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
from tenfold.datamodules.relational.games_datamodule import RelationalGamesDataModule
from tenfold.datamodules.relational.glyphs import load_glyphs
from tenfold.datamodules.relational.registry import RELATIONAL_TASKS, make_relational_task

__all__ = [
    "RelationalTaskDataModule",
    "RelationalGamesDataModule",
    "RelationalTask",
    "SameDifferent",
    "RelationalMatchToSample",
    "DistributionOfThree",
    "IdentityRules",
    "LetterTask",
    "ColouredTask",
    "TASKS",
    "CORELNET_TASKS",
    "COLOURED_TASKS",
    "RELATIONAL_TASKS",
    "Trials",
    "TaskSplits",
    "make_task",
    "make_relational_task",
    "resolve_sizes",
    "generate_splits",
    "generate_coloured_splits",
    "colour_palette",
    "load_glyphs",
]
