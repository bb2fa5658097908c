"""Task registry: importing this package registers every task."""
from study.registry import TASKS
from study.tasks import (adding, assoc_recall, copy, delay, digits, recall_first,  # noqa: F401
                         selective_copy, text)
from study.tasks.base import Batch, Task, TaskConfig

__all__ = ["TASKS", "Batch", "Task", "TaskConfig", "build_task"]


def build_task(name: str, cfg: TaskConfig) -> Task:
    return TASKS.get(name).cls(cfg)
