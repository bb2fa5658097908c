"""The spec's `log:` section: one tiny real sweep logging to TensorBoard, MLflow (a local file
store) and W&B (offline), each tracker read back with its own reader and checked against the
Parquet tables; and the Optuna journal opened by optuna-dashboard's storage loader."""
from __future__ import annotations

import importlib.util
import io
import json
import struct
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from study.errors import UsageError
from study.trackers import PACKAGES, check
from tests.conftest import run_cli

HAVE_WANDB = importlib.util.find_spec("wandb") is not None

SPEC = """\
study: tracked
task: {{name: copy, n_symbols: 2, alphabet: 4}}
grid: {{arch: [lstm], lag: [4]}}
search: {{lr: {{float: [1.0e-3, 1.0e-2], log: true}}}}
fixed: {{d_model: 8, batch_size: 8, eval_batch: 8}}
budget: {{steps: 20, eval_every: 10}}
log:
  tensorboard: {{}}
  mlflow: {{tags: {{owner: tests}}}}
{wandb}"""


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One trial, two reports, every tracker at once (one Ray start for all the checks)."""
    tmp = tmp_path_factory.mktemp("trackers")
    spec = tmp / "spec.yaml"
    spec.write_text(SPEC.format(wandb="  wandb: {mode: offline}\n" if HAVE_WANDB else ""))
    r = run_cli("run", str(spec), "--results", str(tmp / "results"))
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "results" / "tracked"


def first_trial(study: Path) -> str:
    """The id of the study's one trial: its content-addressed cell (study/identity.py), slot 0, seed 0."""
    from study.config import cells
    from study.validate import load_spec
    return f"{cells(load_spec(study / 'spec.yaml'))[0].id}-t000-s0"


def parquet_curve(study: Path, column: str) -> dict[int, float]:
    """The ground truth: step -> value from memscale's metrics table."""
    t = ds.dataset(study / "parquet" / "metrics", format="parquet").to_table(columns=["step", column])
    return dict(zip(t["step"].to_pylist(), t[column].to_pylist()))


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_training_curve(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    runs = list((tracked / "ray").glob(f"run-*/{first_trial(tracked)}"))   # Ray's trial folder is named by trial id
    assert len(runs) == 1 and list(runs[0].glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    got = {e.step: e.value for e in acc.Scalars("ray/tune/train_loss")}
    want = parquet_curve(tracked, "train_loss")
    assert sorted(got) == sorted(want) == [10, 20]               # x axis: the training step
    assert got == pytest.approx(want, rel=1e-6)                  # float32 in the event file
    assert not [t for t in acc.Tags()["scalars"] if "lag_curve" in t or "replay" in t]


@pytest.mark.slow
def test_mlflow_file_store_holds_one_run_per_trial(tracked, monkeypatch):
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")           # MLflow 3 reads it only if asked
    client = MlflowClient(tracking_uri=(tracked / "mlruns").as_uri())
    exp = client.get_experiment_by_name("tracked")                # default experiment: the study
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_name for r in runs] == [first_trial(tracked)]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["owner"] == "tests"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train_loss")}
    assert history == pytest.approx(parquet_curve(tracked, "train_loss"))
    trials = ds.dataset(tracked / "parquet" / "trials", format="parquet").to_table().to_pylist()
    assert float(run.data.params["values/lr"]) == pytest.approx(trials[0]["lr"])


def wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (LevelDB log format: 32 KiB blocks of records, each
    with a 7-byte header crc32/length/type, after W&B's 7-byte file header), parsed with W&B's
    own protobuf schema."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, buf, out = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:                               # block trailer: padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            break
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):                                        # FULL or LAST: a record is complete
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_WANDB, reason="wandb not installed (extra `log`)")
def test_wandb_offline_run_holds_the_training_curve(tracked):
    runs = list((tracked / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    records = wandb_records(runs[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds                                        # the run was finished, not cut off
    history = [{i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    got = {h["step"]: h["train_loss"] for h in history}
    assert got == pytest.approx(parquet_curve(tracked, "train_loss"))
    assert not [k for h in history for k in h if k in ("lag_curve", "replay")]


@pytest.mark.slow
def test_optuna_dashboard_opens_the_journal(tracked):
    """`optuna-dashboard results/<study>/optuna.journal`: its own loader reads the file, and its
    API lists the cell's Optuna study with its trial."""
    from optuna_dashboard import wsgi
    from optuna_dashboard._storage_url import get_storage
    from wsgiref.util import setup_testing_defaults
    storage = get_storage(str(tracked / "optuna.journal"))
    studies = storage.get_all_studies()
    assert [s.study_name for s in studies] == [f"arch=lstm,lag=4 {first_trial(tracked).split('-')[0]}"]
    assert len(storage.get_all_trials(studies[0]._study_id)) == 1

    env: dict = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(env)
    status = []
    body = b"".join(wsgi(storage)(env, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200") and b"arch=lstm,lag=4" in body


def test_unknown_tracker_is_a_one_line_error(tmp_path, write_spec):
    spec = write_spec(SPEC.format(wandb="").replace("  tensorboard: {}\n", "  tensorbord: {}\n"))
    r = run_cli("run", str(spec), "--results", str(tmp_path / "results"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"{spec}: log.tensorbord: unknown key (valid: tensorboard, mlflow, wandb)"]
    assert not (tmp_path / "results").exists()


def test_a_tracker_whose_package_is_missing_is_refused(monkeypatch):
    from study.trackers import Log
    check(Log.model_validate(["tensorboard", "mlflow"]))           # installed by the dev extra
    monkeypatch.setitem(PACKAGES, "mlflow", "no_such_package_memscale")
    with pytest.raises(UsageError, match=r"^log\.mlflow: .*not installed.*memscale\[log\]'$"):
        check(Log.model_validate(["tensorboard", "mlflow"]))
    check(Log.model_validate(["tensorboard"]))                     # the others are unaffected


def test_mlflow_needs_a_tracking_uri_when_the_results_are_remote():
    from study.trackers import Log
    with pytest.raises(UsageError, match="log.mlflow.tracking_uri: required"):
        check(Log.model_validate(["mlflow"]), store_local=False)
    check(Log.model_validate({"mlflow": {"tracking_uri": "http://mlflow:5000"}}), store_local=False)
