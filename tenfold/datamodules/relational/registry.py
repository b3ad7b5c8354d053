"""Every relational task by name: ESBN's four (:mod:`tenfold.datamodules.relational.esbn_tasks`), CoRelNet's
glyph variants (:mod:`tenfold.datamodules.relational.corelnet_tasks`) and its coloured variants
(:mod:`tenfold.datamodules.relational.coloured_tasks`)."""

from __future__ import annotations

from collections.abc import Callable

from tenfold.datamodules.relational.coloured_tasks import COLOURED_TASKS, ColouredTask
from tenfold.datamodules.relational.corelnet_tasks import CORELNET_TASKS
from tenfold.datamodules.relational.esbn_tasks import TASKS, RelationalTask

__all__ = ["RELATIONAL_TASKS", "make_relational_task"]

RELATIONAL_TASKS: dict[str, Callable[[], RelationalTask | ColouredTask]] = {
    **TASKS,
    **CORELNET_TASKS,
    **COLOURED_TASKS,
}
"""Zero-argument constructors of the tasks, by name (ESBN's four first)."""


def make_relational_task(task: str | RelationalTask | ColouredTask) -> RelationalTask | ColouredTask:
    """The task called ``task`` (a key of :data:`RELATIONAL_TASKS`), or ``task`` itself when it is
    a task object (one of one's own: a :class:`RelationalTask` or :class:`ColouredTask` subclass)."""
    if isinstance(task, (RelationalTask, ColouredTask)):
        return task
    if not isinstance(task, str) or task not in RELATIONAL_TASKS:
        raise ValueError(
            f"unknown relational task {task!r}: use one of {', '.join(RELATIONAL_TASKS)}, or a task object of one's "
            "own (a RelationalTask or ColouredTask subclass; from a config: data.task._target_=<its class>)"
        )
    return RELATIONAL_TASKS[task]()
