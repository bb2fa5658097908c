"""The spec's optional `log:` section: which experiment trackers also receive the training curves.

    log: [tensorboard]                                   # trackers by name, with their defaults
    log:                                                 # or with options
      tensorboard: {}
      mlflow: {tracking_uri: http://mlflow.example:5000, experiment_name: my_study}
      wandb: {project: memscale, mode: offline}

The trackers are views for people watching a sweep; the Parquet tables stay the ground truth (a
tracker sees each report once as it happens, never the rows re-sent after a crash). This module
only describes and checks the section; study/loggers.py turns it into Ray Tune's own callbacks.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from study.errors import UsageError


class TensorBoardLog(BaseModel):
    """Event files next to each trial in Ray's folder: `tensorboard --logdir results/<study>/ray`."""
    model_config = ConfigDict(extra="forbid", frozen=True)


class MLflowLog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tracking_uri: str | None = None         # None: a file store in the study folder, <study>/mlruns
    experiment_name: str | None = None      # None: the study's name
    tags: dict[str, str] = {}               # set on every run


class WandbLog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    project: str | None = None              # None: the study's name
    entity: str | None = None               # a team or user; None: the logged-in user's default
    group: str | None = None                # None: the study's name
    mode: Literal["online", "offline", "disabled"] = "online"   # offline: no account; `wandb sync` later
    tags: list[str] = []


class Log(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tensorboard: TensorBoardLog | None = None
    mlflow: MLflowLog | None = None
    wandb: WandbLog | None = None

    @model_validator(mode="before")
    @classmethod
    def _names(cls, raw: Any) -> Any:
        """`[tensorboard, mlflow]` is short for `{tensorboard: {}, mlflow: {}}`; `{mlflow: null}` too."""
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list):
            bad = [n for n in raw if n not in cls.model_fields]
            if bad:
                raise ValueError(f"unknown tracker {bad[0]!r} (valid: {', '.join(cls.model_fields)})")
            raw = {n: {} for n in raw}
        if isinstance(raw, dict):
            raw = {k: ({} if v is None else v) for k, v in raw.items()}
        return raw

    def names(self) -> list[str]:
        return [n for n in type(self).model_fields if getattr(self, n) is not None]


# tracker -> (the module Ray Tune's callback needs, the extra that installs it)
PACKAGES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}


def check(log: Log | None, store_local: bool = True) -> None:
    """Before anything is written: every tracker asked for can be used here."""
    if log is None:
        return
    for name in log.names():
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise UsageError(f"log.{name}: the {PACKAGES[name]} package is not installed; "
                             f"pip install 'memscale[log]'")
    if log.mlflow and log.mlflow.tracking_uri is None and not store_local:
        raise UsageError("log.mlflow.tracking_uri: required when the results are remote (the default "
                         "is a file store inside a local study folder)")
