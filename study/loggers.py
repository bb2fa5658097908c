"""Ray Tune's own logger callbacks for the trackers a spec's `log:` section asks for
(study/trackers.py): TensorBoard through `ray.tune.logger.TBXLoggerCallback`, MLflow and W&B
through `ray.air.integrations`. They run in the driver next to memscale's ResultsCallback, which
stays the only writer of the Parquet tables.

Each tracker gets a trial's reports as they happen, as scalars, with the training step as its x
axis. The lag curve and the rows re-sent after a crash are left out: they are lists, which the
trackers would take for histograms, and Parquet holds them exactly once. A trial continued by
`study resume` is a new run in the tracker (a new Ray experiment), starting where it left off.
The classes live at module level because Ray pickles the callbacks with the experiment.
"""
from __future__ import annotations

import os
from typing import Any

from study.trackers import check

NOT_SCALARS = ("lag_curve", "replay", "config")   # config: logged once as parameters


class Scalars:
    """Hands the wrapped Ray callback a report without memscale's lists, stepped by training step."""

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        out = {k: v for k, v in result.items() if k not in NOT_SCALARS}
        if out.get("step") is not None:
            out["timesteps_total"] = out["step"]     # Ray's callbacks use it, if set, as the x axis
        super().log_trial_result(iteration, trial, out)


# Ray's MLflow and W&B integrations import mlflow, wandb and pandas (~1 s, more under load), and
# every trial worker imports this module with study.sweep: the classes are made on first use
# (PEP 562 module __getattr__), which is also how pickle finds them by name in the driver.
_BASES = {"TensorBoard": ("ray.tune.logger", "TBXLoggerCallback"),
          "MLflow": ("ray.air.integrations.mlflow", "MLflowLoggerCallback"),
          "Wandb": ("ray.air.integrations.wandb", "WandbLoggerCallback")}


def _tracker(name: str) -> type:
    cls = globals().get(name)
    if cls is None:
        import importlib
        module, base = _BASES[name]
        cls = type(name, (Scalars, getattr(importlib.import_module(module), base)), {"__module__": __name__})
        globals()[name] = cls
    return cls


def __getattr__(name: str):
    if name in _BASES:
        return _tracker(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def callbacks(spec, store) -> list[Any]:
    """The tracker callbacks of a spec, in addition to memscale's own (none when `log:` is absent)."""
    log = spec.log
    if log is None:
        return []
    check(log, store.local)
    out: list[Any] = []
    if log.tensorboard:
        out.append(_tracker("TensorBoard")())
    if log.mlflow:
        m = log.mlflow
        uri = m.tracking_uri or "file://" + os.path.abspath(store.join("mlruns"))
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 refuses its file store unless asked (it is in maintenance mode, but needs no
            # server and no database: the right default for a study folder).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        out.append(_tracker("MLflow")(tracking_uri=uri, experiment_name=m.experiment_name or spec.study,
                          tags={"study": spec.study, **m.tags}))
    if log.wandb:
        w = log.wandb
        if w.mode != "online":
            # Ray asks for an API key unless the mode is set in the environment
            # (ray.air.integrations.wandb._set_api_key); offline runs need none.
            os.environ["WANDB_MODE"] = w.mode
        # Runs go to <study>/wandb/ directly: in the trial's folder they would be copied to the
        # study before W&B finishes writing them (Ray stages driver-side files and syncs them).
        where = {"dir": store.path} if store.local else {}
        out.append(_tracker("Wandb")(project=w.project or spec.study, group=w.group or spec.study, entity=w.entity,
                         mode=w.mode, tags=w.tags or None, **where))
    return out
