"""scripts/launch_cluster.sh for real: an on-prem cluster of two machines, both on this one, over SSH.

Each "machine" is a set of Linux namespaces on this host, so that Ray's commands behave as they
would on separate computers and touch nothing outside the test:
- the head (127.0.0.1) and the worker (127.0.0.2) each run their own sshd (a throwaway host key
  and authorized_keys, a non-default port) as PID 1 of a PID namespace: `ray stop`, which Ray's
  node commands run, sees only that machine's processes, and stopping the sshd ends everything
  that ran there;
- every machine, the laptop included, has its own /root (home: ~/.bashrc, ~/.ssh/config with the
  port, Ray's bootstrap files, the synced checkout) and its own /tmp (Ray's session files, the
  local provider's state), with the results folder mounted at the same path everywhere: the
  shared storage of `--results file:///...`.
The cluster config is cluster.onprem.yaml with its documented fields filled in; the nodes use this
test's venv instead of installing one (see "An environment that is already there" in the file).
"""
from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

TOOLS = {name: shutil.which(name) for name in ("sshd", "ssh", "ssh-keygen", "rsync", "unshare", "nsenter")}
TOOLS["sshd"] = TOOLS["sshd"] or shutil.which("sshd", path="/usr/sbin")
needs = pytest.mark.skipif(
    os.geteuid() != 0 or not all(TOOLS.values()),
    reason="needs root (namespaces), util-linux and Debian's openssh-server and rsync "
           "(apt-get install -y openssh-server rsync); missing: "
           + (", ".join(k for k, v in TOOLS.items() if not v) or "root"))

HEAD, WORKER = "127.0.0.1", "127.0.0.2"
EVALS = 5                                  # smoke.yaml: steps 500 / eval_every 100
TIMEOUT = 900


def free_port(*hosts: str) -> int:
    """A port nothing listens on, at every host given."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
            try:
                for h in hosts[1:]:
                    with socket.socket() as t:
                        t.bind((h, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def ns(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def child_of(pid: int) -> int | None:
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                return int(p.name)
        except (OSError, IndexError, ValueError):
            pass
    return None


def procs_in(kind: str, ident: str) -> dict[int, str]:
    """Live processes (pid -> command line) in the namespace `ident` of this kind."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or ns(int(p.name), kind) != ident:
            continue
        try:
            if (p / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            out[int(p.name)] = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            pass
    return out


class Machine:
    """A home and a /tmp of its own; paths that must stay visible are mounted back in place."""

    def __init__(self, base: Path, name: str, keep: list[Path]):
        self.name = name
        self.home = base / name / "home"
        self.tmp = base / name / "tmp"
        (self.home / ".ssh").mkdir(parents=True)
        self.tmp.mkdir(parents=True)
        self.keep = keep

    def mounts(self) -> str:
        """Shell commands that give this mount namespace its own /root and /tmp."""
        cmds = []
        kept: list[Path] = []
        for p in sorted({k.resolve() for k in self.keep}, key=lambda p: len(p.parts)):
            if any(p.is_relative_to(k) for k in kept):
                continue
            kept.append(p)
            for top, mine in ((Path("/root"), self.home), (Path("/tmp"), self.tmp)):
                if p.is_relative_to(top):
                    spot = mine / p.relative_to(top)
                    cmds.append(f"mkdir -p '{spot}' && mount --bind '{p}' '{spot}'")
        cmds += [f"mount --rbind '{self.home}' /root", f"mount --rbind '{self.tmp}' /tmp"]
        return " && ".join(cmds)


class Node(Machine):
    """A cluster machine: sshd as PID 1 of its own PID namespace, listening on ip:port."""

    def __init__(self, base: Path, name: str, ip: str, port: int, keep: list[Path], client_pub: str,
                 host_key: Path):
        super().__init__(base, name, keep)
        self.ip, self.port = ip, port
        (self.home / ".ssh" / "authorized_keys").write_text(client_pub)
        sshd = self.home / ".sshd"
        sshd.mkdir()
        shutil.copy(host_key, sshd / "host_key")
        (sshd / "host_key").chmod(0o600)
        (sshd / "sshd_config").write_text(f"""\
ListenAddress {ip}:{port}
HostKey /root/.sshd/host_key
PidFile none
AuthorizedKeysFile /root/.ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding local
X11Forwarding no
PrintMotd no
""")
        self.log = open(base / f"sshd-{name}.log", "w")
        # unshare forks the sshd (PID 1 inside); our child is unshare itself, waiting for it
        self.proc = subprocess.Popen(
            [TOOLS["unshare"], "--pid", "--fork", "--mount-proc", "--mount", "--propagation", "private",
             "sh", "-c", f"{self.mounts()} && mkdir -p /run/sshd && exec {TOOLS['sshd']} -D -e -f /root/.sshd/sshd_config"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        while not listening(ip, port):
            assert self.proc.poll() is None, (base / f"sshd-{name}.log").read_text()
            assert time.time() - t0 < 30, f"sshd on {ip}:{port} did not start"
            time.sleep(0.1)
        self.sshd = wait_for(lambda: child_of(self.proc.pid), "the sshd", timeout=30)
        self.pidns = ns(self.sshd, "pid")

    def processes(self) -> dict[int, str]:
        """Everything running on this machine but its sshd listener."""
        return {p: c for p, c in procs_in("pid", self.pidns).items() if p != self.sshd}

    def stop(self) -> None:
        os.kill(self.sshd, signal.SIGKILL)           # PID 1 of the namespace: the kernel ends the rest
        self.proc.wait(timeout=30)
        self.log.close()


class Laptop(Machine):
    """The user's machine: one mount namespace, held open, that every command enters."""

    def __init__(self, base: Path, keep: list[Path]):
        super().__init__(base, "laptop", keep)
        self.holder = subprocess.Popen([TOOLS["unshare"], "--mount", "--propagation", "private", "sh", "-c",
                                        f"{self.mounts()} && exec sleep 86400"], start_new_session=True)
        t0 = time.time()
        while ns(self.holder.pid, "mnt") == ns(os.getpid(), "mnt") or \
                not Path(f"/proc/{self.holder.pid}/cmdline").read_bytes().startswith(b"sleep"):
            assert self.holder.poll() is None and time.time() - t0 < 30, "no laptop namespace"
            time.sleep(0.05)
        self.mntns = ns(self.holder.pid, "mnt")
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                    # the user's venv is active: `ray` and `python3` are its own
                    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
        for k in ("RAY_ADDRESS", "RAY_UP_enable_autoscaler_v2"):
            self.env.pop(k, None)

    def argv(self, *args: str) -> list[str]:
        return [TOOLS["nsenter"], f"--target={self.holder.pid}", "--mount", f"--wdns={ROOT}", "--", *args]

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), cwd=ROOT, env=self.env, stdout=open(log, "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def processes(self) -> dict[int, str]:
        return {p: c for p, c in procs_in("mnt", self.mntns).items() if p != self.holder.pid}

    def stop(self) -> None:
        for pid in self.processes():              # only processes started in this namespace
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.holder.kill()
        self.holder.wait(timeout=30)


def onprem_config(ssh_port: int, ports: dict[str, int]) -> dict:
    """cluster.onprem.yaml with its documented fields filled in for these two machines."""
    cfg = yaml.safe_load((ROOT / "cluster.onprem.yaml").read_text())
    cfg["provider"]["head_ip"] = HEAD
    cfg["provider"]["worker_ips"] = [WORKER]
    cfg["auth"]["ssh_user"] = getpass.getuser()          # the key stays ~/.ssh/id_ed25519
    cfg["min_workers"] = cfg["max_workers"] = 1
    # An environment that is already there: this test's venv (the same path on every machine),
    # activated from ~/.bashrc like the file's own venv; nothing installed.
    activate = f"source {sys.prefix}/bin/activate"
    cfg["setup_commands"] = [f"grep -qxF '{activate}' ~/.bashrc || echo '{activate}' >> ~/.bashrc"]
    cfg["head_setup_commands"] = []
    cfg["worker_setup_commands"] = []
    # Ports away from Ray's defaults (other Ray instances may run on this host), a small object
    # store, and the worker's own loopback address: both nodes share one network stack here.
    small = "--object-store-memory=100000000"
    head = cfg["head_start_ray_commands"]
    assert "--port=6379" in head[-1]
    head[-1] = head[-1].replace(
        "--port=6379", f"--port={ports['gcs']} --dashboard-port={ports['dashboard']} "
                       f"--ray-client-server-port={ports['client']} "
                       f"--dashboard-agent-listen-port={ports['head_agent']} {small}")
    worker = cfg["worker_start_ray_commands"]
    assert "$RAY_HEAD_IP:6379" in worker[-1]
    worker[-1] = worker[-1].replace(
        "$RAY_HEAD_IP:6379", f"$RAY_HEAD_IP:{ports['gcs']} --node-ip-address={WORKER} --num-cpus=2 "
                             f"--dashboard-agent-listen-port={ports['worker_agent']} {small}")
    return cfg


@pytest.fixture
def machines(tmp_path):
    subprocess.run([TOOLS["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", "memscale-test",
                    "-f", str(tmp_path / "host_key")], check=True)
    shared = tmp_path / "shared"                  # the "NFS mount": the same path on every machine
    shared.mkdir()
    keep = [ROOT, Path(sys.prefix), Path(sys.base_prefix), shared]
    laptop = Laptop(tmp_path, keep)
    key = laptop.home / ".ssh" / "id_ed25519"
    subprocess.run([TOOLS["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", "memscale-test", "-f", str(key)],
                   check=True)
    port = free_port(HEAD, WORKER)
    nodes = []
    try:
        for name, ip in (("head", HEAD), ("worker", WORKER)):
            nodes.append(Node(tmp_path, name, ip, port, keep, (key.parent / "id_ed25519.pub").read_text(),
                              tmp_path / "host_key"))
        # the SSH port, as a user with a non-default port would write it, on every machine
        for m in [laptop, *nodes]:
            (m.home / ".ssh" / "config").write_text(f"Host {HEAD} {WORKER}\n  Port {port}\n")
        yield laptop, nodes, shared
    finally:
        for n in nodes:
            n.stop()
        laptop.stop()


def wait_for(pred, what: str, proc: subprocess.Popen | None = None, log: Path | None = None,
             timeout: float = TIMEOUT):
    t0 = time.time()
    while not (found := pred()):
        if proc is not None:
            assert proc.poll() is None, f"exited before {what}:\n" + (log.read_text()[-4000:] if log else "")
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.5)
    return found


def checkpoints(study: Path) -> dict[str, tuple[int, bool]]:
    """trial id -> (step, final) of every checkpoint of a trial that has no trials row yet."""
    done = {p.stem for p in (study / "parquet" / "trials").glob("*.parquet")}
    out = {}
    for p in sorted((study / "checkpoints").glob("*.pt")):
        if p.stem not in done:
            try:
                ck = torch.load(p, weights_only=False)
            except Exception:       # noqa: BLE001 - being replaced right now; look again
                continue
            out[p.stem] = (ck["progress"]["step"], ck["final"])
    return out


def mid_way(study: Path) -> bool:
    """Two trials finished and one running, 100..200 steps of 500 in (the stop will find it running)."""
    if len(list((study / "parquet" / "trials").glob("*.parquet"))) < 2:
        return False
    return any(not final and 100 <= step <= 200 for step, final in checkpoints(study).values())


def sql(uri: str, query: str) -> list[dict]:
    r = run_cli("sql", uri, query, "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check(r: subprocess.CompletedProcess, what: str) -> str:
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{what} exited {r.returncode}:\n{out[-4000:]}"
    return out


@needs
def test_up_submit_stop_resume_down_over_ssh(machines, tmp_path):
    laptop, (head, worker), shared = machines
    t0 = time.time()
    ports = {k: free_port(HEAD, WORKER) for k in ("gcs", "dashboard", "client", "head_agent", "worker_agent")}
    config = laptop.home / "cluster.onprem.yaml"        # the user's copy, with their IPs
    config.write_text(yaml.safe_dump(onprem_config(head.port, ports), sort_keys=False))
    fwd = free_port(HEAD)
    launch = ["scripts/launch_cluster.sh", "--config", "/root/cluster.onprem.yaml", "--port", str(fwd)]
    uri = f"file://{shared}"
    study = shared / "smoke"
    marks = [("start", time.time())]
    mark = lambda name: marks.append((name, time.time()))      # noqa: E731

    check(laptop.run(*launch, "up"), "up")
    mark("up")

    log = tmp_path / "submit.log"
    sub = laptop.popen(*launch, "submit", "search_spaces/smoke.yaml", "--results", uri, log=log)
    job = wait_for(lambda: re.search(r"job (memscale-smoke-\S+) submitted", log.read_text()), "submission",
                   sub, log).group(1)
    wait_for(lambda: (study / "parquet" / "trials").is_dir(), "a first finished trial", sub, log)

    status = check(laptop.run(*launch, "status", timeout=120), "status")
    assert re.search(r"\b\d+(\.\d+)?/2\.0 CPU", status), status[-2000:]       # the worker's 2 CPUs joined

    wait_for(lambda: mid_way(study), "a trial mid-way", sub, log)
    check(laptop.run("ray", "job", "stop", "--address", f"http://127.0.0.1:{fwd}", job, timeout=120), "ray job stop")
    assert sub.wait(timeout=120) == 0, log.read_text()[-4000:]
    followed = log.read_text()
    assert "[smoke] 6 cells, 12 trials, 12 to run" in followed and f"Job '{job}' was stopped" in followed, followed[-3000:]
    assert not listening(HEAD, fwd), "the submit's port-forward outlived it"
    # once the stopped driver's trials are gone too, what they left: finished rows, checkpoints
    wait_for(lambda: not [c for c in worker.processes().values() if "ImplicitFunc" in c], "the trials to end",
             timeout=120)
    finished_before = {p.stem for p in (study / "parquet" / "trials").glob("*.parquet")}
    stopped = {t: step for t, (step, final) in checkpoints(study).items() if not final}
    assert 2 <= len(finished_before) < 12 and stopped, (finished_before, stopped)
    mark("submit, status, stop")

    resumed = check(laptop.run(*launch, "resume", f"{uri}/smoke", timeout=TIMEOUT), "resume")
    assert f"{12 - len(finished_before)} to run" in resumed and "12 of 12 trials finished" in resumed, resumed[-3000:]
    resume_job = re.search(r"job (memscale-resume-smoke-\S+) submitted", resumed).group(1)
    assert f"Job '{resume_job}' succeeded" in resumed

    mark("resume")
    jobs = check(laptop.run(*launch, "logs", timeout=120), "logs")
    assert job in jobs and resume_job in jobs
    replay = check(laptop.run(*launch, "logs", resume_job, timeout=120), "logs JOB_ID")
    assert "12 of 12 trials finished" in replay and f"Job '{resume_job}' succeeded" in replay

    mark("logs")
    # the study, through `study sql` on the URI: 12 completed trials, every row exactly once, and
    # the trials running when the driver was stopped continued from their checkpoints
    (once,) = sql(f"{uri}/smoke", f"""SELECT
        (SELECT count(*) FROM trials) AS trials,
        (SELECT count(DISTINCT trial_id) FROM trials) AS ids,
        (SELECT string_agg(DISTINCT status) FROM trials) AS status,
        (SELECT count(*) = count(DISTINCT (trial_id, iteration)) FROM metrics) AS metrics_once,
        (SELECT count(*) = count(DISTINCT (trial_id, step, lag)) FROM lag_curves) AS curves_once,
        (SELECT count(*) FROM (SELECT trial_id FROM metrics GROUP BY 1
                               HAVING count(*) = {EVALS} AND min(iteration) = 1 AND max(iteration) = {EVALS})
        ) AS every_eval_once""")
    assert once == {"trials": 12, "ids": 12, "status": "completed", "metrics_once": True, "curves_once": True,
                    "every_eval_once": 12}, once
    rows = sql(f"{uri}/smoke", "SELECT trial_id, resumed_from_step AS s FROM trials WHERE resumed_from_step > 0")
    assert {r["trial_id"]: r["s"] for r in rows if r["trial_id"] in stopped} == stopped
    storage = JournalStorage(JournalFileBackend(str(study / "optuna.journal")))
    for s in optuna.get_all_study_names(storage):
        trials = optuna.load_study(study_name=s, storage=storage).trials
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        assert sorted(t.user_attrs["slot"] for t in trials if t.state == TrialState.COMPLETE) == [0, 1]

    mark("checks")
    check(laptop.run(*launch, "down", timeout=300), "down")
    mark("down")
    # nothing left: no Ray process and no SSH session on either machine, no port-forward or SSH
    # client on the laptop (Ray's SSH control master lingers its ControlPersist=10s, so wait)
    left = lambda: {m.name: m.processes() for m in (head, worker, laptop) if m.processes()}   # noqa: E731
    t_down = time.time()
    while left() and time.time() - t_down < 30:
        time.sleep(1)
    assert not left(), left()
    assert not listening(HEAD, fwd) and not listening(HEAD, ports["gcs"]) and not listening(HEAD, ports["dashboard"])
    mark("nothing left")
    print("\nlaunch script on two SSH machines: " + ", ".join(
        f"{name} {t - marks[i][1]:.0f} s" for i, (name, t) in enumerate(marks[1:])) +
        f"; {time.time() - t0:.0f} s in all, {len(finished_before)} trials before the stop "
        f"(load {os.getloadavg()[0]:.1f})")
