"""cluster.yaml, cluster.onprem.yaml and scripts/launch_cluster.sh, checked without a cloud.

The cluster files go through Ray's own validation (the same calls `ray up` makes before it
touches a provider). The launch script is run as a subprocess: with --dry-run it must print the
Ray commands, and in a real run it is pointed at a fake `ray` on PATH (records its arguments; its
`dashboard` just listens on the local port) so the port-forward handling is exercised too. No
network, no cluster.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "launch_cluster.sh"
AWS = ROOT / "cluster.yaml"
ONPREM = ROOT / "cluster.onprem.yaml"
SPEC = "search_spaces/smoke.yaml"
URI = "s3://my-bucket/memscale"
DASH = "http://127.0.0.1:8265"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def launch(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: float = 60):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def commands(stdout: str) -> list[list[str]]:
    """The printed command lines (comments dropped), split the way a shell would."""
    return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


# ---- the cluster files ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", [AWS, ONPREM], ids=["aws", "onprem"])
def test_cluster_file_passes_ray_validation(path, monkeypatch):
    from ray.autoscaler._private.util import prepare_config, validate_config
    monkeypatch.chdir(ROOT)        # file_mounts' local path "." is relative to where `ray up` runs
    validate_config(prepare_config(load(path)))


def test_aws_cluster_has_cpu_head_and_two_gpu_worker_types():
    cfg = load(AWS)
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}            # no trial ever lands on the head
    assert "InstanceMarketOptions" not in head["node_config"]     # never a spot head
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    gpus = sorted(t["resources"]["GPU"] for t in workers.values())
    assert gpus[0] == 1 and gpus[-1] > 1, "one small-GPU type and one multi-GPU type"
    for t in types.values():
        assert all(isinstance(v, int) and not isinstance(v, bool) for v in t["resources"].values())
    for t in workers.values():
        assert t["min_workers"] == 0 and t["max_workers"] >= 1
    small = next(t for t in workers.values() if t["resources"]["GPU"] == 1)
    assert small["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert cfg["max_workers"] >= sum(t["max_workers"] for t in workers.values())


@pytest.mark.parametrize("path", [AWS, ONPREM], ids=["aws", "onprem"])
def test_every_node_runs_the_same_code_and_versions(path):
    cfg = load(path)
    (remote, local), = cfg["file_mounts"].items()
    assert local == "."                               # this checkout, copied head -> workers
    head, worker = " ; ".join(cfg["head_setup_commands"]), " ; ".join(cfg["worker_setup_commands"])
    for cmds in (head, worker):
        assert f"pip install -q -e {remote}" in cmds
    pins = [re.findall(r"(ray\[[a-z,]+\]|torch)==([0-9.]+)", c) for c in (head, worker)]
    assert pins[0] and sorted(pins[0]) == sorted(pins[1]), pins   # same ray and torch everywhere
    if path == AWS:
        assert "boto3" in head                         # the head's autoscaler launches workers


def test_onprem_uses_the_local_provider_without_node_types():
    cfg = load(ONPREM)
    provider = cfg["provider"]
    assert provider["type"] == "local"
    assert "available_node_types" not in cfg and "head_node_type" not in cfg
    for ip in [provider["head_ip"], *provider["worker_ips"]]:
        assert ipaddress.ip_address(ip).is_private    # placeholders, not someone's machines
    assert cfg["min_workers"] == cfg["max_workers"] == len(provider["worker_ips"])


@pytest.mark.parametrize("path", [AWS, ONPREM], ids=["aws", "onprem"])
def test_no_open_ports_and_no_credentials(path):
    text = path.read_text()
    cfg = load(path)
    assert "IpPermissions" not in yaml.safe_dump(cfg.get("provider", {}))
    starts = " ".join(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert "0.0.0.0" not in starts and "dashboard-host" not in starts    # dashboard on localhost
    assert "ray client" not in starts.lower() and "--ray-client-server-port" not in starts
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"(aws_secret_access_key|aws_session_token|RAY_AUTH_TOKEN)\s*[:=]", text,
                         re.I)
    assert "ssh_private_key" not in cfg["auth"] or cfg["auth"]["ssh_private_key"].startswith("~/")


# ---- launch script: dry run ------------------------------------------------------------------------

def test_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in SCRIPT.read_text()


@pytest.mark.parametrize("verb, expected", [
    ("up", ["ray", "up", "-y", "cluster.yaml"]),
    ("down", ["ray", "down", "-y", "cluster.yaml"]),
    ("status", ["ray", "exec", "cluster.yaml", "ray status"]),
])
def test_dry_run_cluster_commands(verb, expected):
    r = launch("--dry-run", verb)
    assert r.returncode == 0, r.stderr
    assert commands(r.stdout) == [["cd", str(ROOT)], expected]


def test_dry_run_submit_prints_forward_submit_and_follow():
    r = launch("--dry-run", "submit", SPEC, "--results", URI)
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert cmds[0] == ["cd", str(ROOT)]
    assert cmds[1] == ["ray", "dashboard", "--port", "8265", "--remote-port", "8265", "cluster.yaml", "&"]
    submit = cmds[2]
    assert submit[:3] == ["ray", "job", "submit"]
    sep = submit.index("--")
    opts, entry = submit[3:sep], submit[sep + 1:]
    assert entry == ["study", "run", SPEC, "--address", "auto", "--results", URI]
    assert opts[opts.index("--address") + 1] == DASH
    assert opts[opts.index("--working-dir") + 1] == "."
    assert "--no-wait" in opts
    job_id = opts[opts.index("--submission-id") + 1]
    assert re.fullmatch(r"memscale-smoke-\d{8}-\d{6}", job_id)
    assert cmds[3] == ["ray", "job", "logs", "--address", DASH, "--follow", job_id]
    assert cmds[4] == ["ray", "job", "status", "--address", DASH, job_id]
    assert len(cmds) == 5


def test_dry_run_onprem_up_uses_autoscaler_v1_and_down_stops_every_worker():
    # autoscaler v2 (ray up's default since Ray 2.50) does not run the local provider's workers,
    # and `ray down` stops Ray on the head only
    r = launch("--dry-run", "--config", "cluster.onprem.yaml", "up")
    assert commands(r.stdout)[1] == ["env", "RAY_UP_enable_autoscaler_v2=0", "ray", "up", "-y", "cluster.onprem.yaml"]
    r = launch("--dry-run", "--config", "cluster.onprem.yaml", "down")
    cmds = commands(r.stdout)
    assert cmds[1] == ["ray", "down", "-y", "cluster.onprem.yaml"]
    cfg = load(ONPREM)
    key = os.path.expanduser(cfg["auth"]["ssh_private_key"])
    assert [c[-2] for c in cmds[2:]] == [f"{cfg['auth']['ssh_user']}@{ip}" for ip in cfg["provider"]["worker_ips"]]
    for c in cmds[2:]:
        assert c[:4] == ["ssh", "-n", "-i", key]
        assert c[-1] == "bash --login -c -i 'source ~/.bashrc; ray stop'"


def test_dry_run_forward_reaches_the_dashboard_port_the_config_sets(tmp_path):
    cfg = load(ONPREM)
    cfg["head_start_ray_commands"][-1] += " --dashboard-port=18300"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = launch("--dry-run", "--config", str(path), "logs")
    assert commands(r.stdout)[1] == ["ray", "dashboard", "--port", "8265", "--remote-port", "18300", str(path), "&"]


def test_dry_run_options_anywhere_other_config_and_port(tmp_path):
    spec = str(ROOT / SPEC)             # an absolute path inside the checkout, called from elsewhere
    r = launch("submit", spec, "--results=gs://b/p", "--config", str(ONPREM), "--port", "18265",
               "--no-follow", "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert cmds[1] == ["ray", "dashboard", "--port", "18265", "--remote-port", "8265", "cluster.onprem.yaml", "&"]
    assert cmds[2][-8:] == ["--", "study", "run", SPEC, "--address", "auto", "--results", "gs://b/p"]
    assert "http://127.0.0.1:18265" in cmds[2]
    assert len(cmds) == 3                               # --no-follow: no logs/status


def test_dry_run_resume_and_logs():
    r = launch("--dry-run", "resume", "s3://my-bucket/memscale/smoke")
    assert r.returncode == 0, r.stderr
    submit = commands(r.stdout)[2]
    assert submit[submit.index("--") + 1:] == [
        "study", "resume", "s3://my-bucket/memscale/smoke", "--address", "auto"]
    assert any(re.fullmatch(r"memscale-resume-smoke-\d{8}-\d{6}", a) for a in submit)

    r = launch("--dry-run", "logs", "memscale-smoke-1")
    assert commands(r.stdout)[2] == ["ray", "job", "logs", "--address", DASH, "--follow",
                                     "memscale-smoke-1"]
    r = launch("--dry-run", "logs")
    assert commands(r.stdout)[2] == ["ray", "job", "list", "--address", DASH]


def test_dry_run_quotes_awkward_arguments():
    r = launch("--dry-run", "--no-follow", "submit", SPEC, "--results", "s3://b/it's here")
    assert r.returncode == 0, r.stderr
    assert commands(r.stdout)[2][-1] == "s3://b/it's here"


# ---- launch script: refusals -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [],
    ["--dry-run"],
    ["launch"],
    ["up", "extra"],
    ["--frobnicate", "up"],
    ["submit"],
    ["submit", SPEC],                                   # no --results
    ["submit", SPEC, "other.yaml", "--results", URI],
    ["submit", SPEC, "--results"],
    ["up", "--results", URI],
    ["resume"],
    ["logs", "a", "b"],
    ["--config", "no-such-cluster.yaml", "up"],
    ["--port", "http", "up"],
    ["--port", "70000", "up"],
    ["submit", "search_spaces/no-such-spec.yaml", "--results", URI],
])
def test_bad_arguments_exit_2_with_usage(args):
    r = launch("--dry-run", *args) if "--dry-run" not in args else launch(*args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "usage:" in r.stderr and "error:" in r.stderr
    assert "ray " not in r.stdout                      # nothing was (or would be) run


def test_help_exits_0():
    r = launch("--help")
    assert r.returncode == 0 and "usage:" in r.stdout and "submit SPEC --results URI" in r.stdout


@pytest.mark.parametrize("results", [
    "results", "./results", "/data/results", "~/results", "file://results", "s3://", "hdfs:/x",
])
def test_submit_refuses_results_that_are_not_a_shared_uri(results):
    r = launch("--dry-run", "submit", SPEC, "--results", results)
    assert r.returncode == 2, r.stdout
    assert "every node" in r.stderr or "absolute path" in r.stderr
    assert "ray " not in r.stdout


def test_resume_refuses_a_local_study_dir():
    r = launch("--dry-run", "resume", "results/smoke")
    assert r.returncode == 2 and "every node" in r.stderr


def test_file_uri_is_accepted_with_a_shared_storage_note():
    r = launch("--dry-run", "submit", SPEC, "--results", "file:///mnt/shared/memscale")
    assert r.returncode == 0, r.stderr
    assert "shared storage" in r.stderr


def test_spec_outside_the_checkout_is_refused(tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text((ROOT / SPEC).read_text())
    r = launch("--dry-run", "submit", str(spec), "--results", URI)
    assert r.returncode == 2 and "outside the repository" in r.stderr


# ---- launch script: a real run against a fake `ray` ------------------------------------------------

FAKE_RAY = """\
#!{python}
import os, shutil, socket, sys
args = sys.argv[1:]
with open(os.environ["FAKE_RAY_LOG"], "a") as f:
    f.write(" ".join(args) + "\\n")
if args[:1] == ["--version"]:
    print("ray, version 2.60.0")
elif args[:1] == ["dashboard"]:          # stands in for the SSH port-forward
    with open(os.environ["FAKE_RAY_LOG"] + ".ssh", "w") as f:
        f.write(open(shutil.which("ssh")).read() if shutil.which("ssh") else "")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(args[args.index("--port") + 1])))
    s.listen(8)
    while True:
        s.accept()[0].close()
elif args[:2] == ["job", "logs"] and os.environ.get("FAKE_RAY_FAIL_LOGS"):
    sys.exit(3)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def fake_ray(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ray = bin_dir / "ray"
    ray.write_text(FAKE_RAY.format(python=sys.executable))
    ray.chmod(0o755)
    log = tmp_path / "ray-calls.log"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_RAY_LOG": str(log)}
    return env, log


@pytest.mark.parametrize("fail_logs", [False, True], ids=["ok", "logs-fail"])
def test_submit_runs_forward_then_job_and_always_closes_the_forward(fake_ray, fail_logs):
    env, log = fake_ray
    port = free_port()
    if fail_logs:
        env = {**env, "FAKE_RAY_FAIL_LOGS": "1"}
    r = launch("--port", str(port), "submit", SPEC, "--results", URI, env=env)
    assert r.returncode == (3 if fail_logs else 0), r.stderr
    calls = log.read_text().splitlines()
    dash = f"http://127.0.0.1:{port}"
    assert calls[0] == "--version"
    assert calls[1] == f"dashboard --port {port} --remote-port 8265 cluster.yaml"
    # the forward gets an SSH connection of its own, not Ray's shared master that would outlive it
    assert "-o ControlMaster=no -o ControlPath=none" in Path(f"{log}.ssh").read_text()
    assert calls[2].startswith(f"job submit --address {dash} --working-dir . --submission-id ")
    assert calls[2].endswith(f"--no-wait -- study run {SPEC} --address auto --results {URI}")
    assert calls[3].startswith(f"job logs --address {dash} --follow memscale-smoke-")
    deadline = time.time() + 5
    while port_open(port) and time.time() < deadline:
        time.sleep(0.1)
    assert not port_open(port), "the port-forward outlived the script"


def test_busy_local_port_is_refused(fake_ray):
    env, log = fake_ray
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = launch("--port", str(port), "logs", env=env)
    assert r.returncode == 1 and "already listens" in r.stderr
    assert "dashboard" not in log.read_text()
