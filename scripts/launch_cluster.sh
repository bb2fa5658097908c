#!/usr/bin/env bash
# Bring up a Ray cluster, run a memscale study on it as a Ray job, follow it, tear it down.
# Thin wrapper over Ray's own CLI (`ray up`, `ray dashboard`, `ray job ...`, `ray down`);
# `--dry-run` prints every command instead of running it. See docs/cluster.md.
#
# Security: the Ray job server is never exposed. `submit`, `resume` and `logs` open an SSH
# port-forward with `ray dashboard CONFIG` (127.0.0.1:PORT here -> the head's 127.0.0.1:8265, or
# the --dashboard-port its `ray start --head` sets), talk to http://127.0.0.1:PORT, and close the
# forward when they exit.
set -euo pipefail

PROG=$(basename "$0")
ROOT=$(cd "$(dirname "$0")/.." && pwd -P)

usage() {
  cat <<EOF
usage: $PROG [--config FILE] [--port N] [--dry-run] COMMAND [ARGS]

commands:
  up                           create or update the cluster (ray up -y FILE)
  submit SPEC --results URI    run \`study run SPEC --address auto --results URI\` as a Ray job,
                               then follow its logs (Ctrl-C stops following, not the study)
  status                       nodes, resources and autoscaler state (ray status on the head)
  logs [JOB_ID]                follow a job's logs; without JOB_ID, list the cluster's jobs
  resume STUDY_URI             run \`study resume STUDY_URI --address auto\` as a Ray job, follow it
  down                         terminate the cluster (ray down -y FILE)

options:
  --config FILE   Ray cluster config (default: cluster.yaml; cluster.onprem.yaml for own machines)
  --results URI   where the study writes: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, or
                  file:///PATH on storage mounted at the same path on every node
  --port N        local port of the dashboard port-forward (default: 8265)
  --no-follow     submit/resume: return once the job is submitted
  --dry-run       print every command instead of running it
  -h, --help      this message
EOF
}

die_usage() { echo "$PROG: error: $*" >&2; echo >&2; usage >&2; exit 2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

# ---- arguments -------------------------------------------------------------------------------
CONFIG=cluster.yaml
PORT=8265
DRY_RUN=0
FOLLOW=1
RESULTS=""
HAVE_RESULTS=0
POSITIONAL=()

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value"; }

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --no-follow) FOLLOW=0; shift ;;
    --config) need_value "$@"; CONFIG=$2; shift 2 ;;
    --config=*) CONFIG=${1#--config=}; [ -n "$CONFIG" ] || die_usage "--config needs a value"; shift ;;
    --port) need_value "$@"; PORT=$2; shift 2 ;;
    --port=*) PORT=${1#--port=}; shift ;;
    --results) need_value "$@"; RESULTS=$2; HAVE_RESULTS=1; shift 2 ;;
    --results=*) RESULTS=${1#--results=}; HAVE_RESULTS=1; shift ;;
    --) shift; while [ $# -gt 0 ]; do POSITIONAL+=("$1"); shift; done ;;
    -*) die_usage "unknown option: $1" ;;
    *) POSITIONAL+=("$1"); shift ;;
  esac
done

[ ${#POSITIONAL[@]} -gt 0 ] || die_usage "no command given"
COMMAND=${POSITIONAL[0]}
ARGS=("${POSITIONAL[@]:1}")
NARGS=${#ARGS[@]}

case "$PORT" in ''|*[!0-9]*) die_usage "--port must be a number, got '$PORT'" ;; esac
[ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die_usage "--port must be 1-65535, got $PORT"

case "$COMMAND" in
  up|status|down) [ "$NARGS" -eq 0 ] || die_usage "$COMMAND takes no arguments" ;;
  submit) [ "$NARGS" -eq 1 ] || die_usage "submit needs exactly one SPEC" ;;
  logs) [ "$NARGS" -le 1 ] || die_usage "logs takes at most one JOB_ID" ;;
  resume) [ "$NARGS" -eq 1 ] || die_usage "resume needs exactly one STUDY_URI" ;;
  *) die_usage "unknown command: $COMMAND" ;;
esac
if [ "$COMMAND" != submit ] && [ "$HAVE_RESULTS" -eq 1 ]; then
  die_usage "--results belongs to submit (resume takes the study's URI itself)"
fi

# A cluster needs results on storage that every node reaches: a bucket, or a shared mount.
check_uri() {  # $1: what it is (for messages), $2: the value
  case "$2" in
    s3://?*|gs://?*) ;;
    file:///?*)
      note "note: $2 must be shared storage (NFS, EFS, ...) mounted at the same path on every node" ;;
    file://*)
      die_usage "$1 '$2': a file:// URI needs an absolute path, e.g. file:///mnt/shared/results" ;;
    *)
      die_usage "$1 '$2' is not a URI that every node of a cluster reaches.
  Trials run on several machines, so results must go to shared storage:
    s3://BUCKET/PREFIX   gs://BUCKET/PREFIX   file:///PATH (a mount present on every node)
  (a plain local path only works for \`study run\` on one machine)" ;;
  esac
}

# Paths given relative to where the script was called from; commands run from the repo root
# (file_mounts "." and --working-dir . mean the checkout). Prints the path relative to the root
# when it lies inside it.
from_root() {  # $1: a path that exists
  local dir base abs
  dir=$(cd "$(dirname "$1")" && pwd -P)
  base=$(basename "$1")
  abs="$dir/$base"
  case "$abs" in
    "$ROOT"/*) echo "${abs#"$ROOT"/}" ;;
    *) echo "$abs" ;;
  esac
}

# The default, and any relative path not found from here, is looked up in the repository root.
if [ ! -f "$CONFIG" ] && [ "${CONFIG#/}" = "$CONFIG" ] && [ -f "$ROOT/$CONFIG" ]; then CONFIG="$ROOT/$CONFIG"; fi
[ -f "$CONFIG" ] || die_usage "cluster config not found: $CONFIG"
CONFIG=$(from_root "$CONFIG")

case "$COMMAND" in
  submit)
    SPEC=${ARGS[0]}
    [ "$HAVE_RESULTS" -eq 1 ] || die_usage "submit needs --results URI (s3://, gs://, or file:/// on shared storage)"
    check_uri "--results" "$RESULTS"
    [ -f "$SPEC" ] || die_usage "spec not found: $SPEC"
    SPEC=$(from_root "$SPEC")
    case "$SPEC" in
      /*) die_usage "spec $SPEC is outside the repository; the job uploads only the checkout
  ($ROOT) as its working directory: copy the spec under search_spaces/" ;;
    esac
    ;;
  resume)
    STUDY_URI=${ARGS[0]}
    check_uri "STUDY_URI" "$STUDY_URI"
    ;;
esac

# ---- running (or printing) commands -----------------------------------------------------------
quote() {  # print the arguments as one shell-quoted command line
  local out="" a
  for a in "$@"; do
    case "$a" in
      '') a="''" ;;
      *[!A-Za-z0-9_./:=@%+,-]*) a="'${a//\'/\'\\\'\'}'" ;;
    esac
    out="$out${out:+ }$a"
  done
  printf '%s\n' "$out"
}

run() {
  if [ "$DRY_RUN" -eq 1 ]; then quote "$@"; else "$@"; fi
}

if [ "$DRY_RUN" -eq 1 ]; then
  quote cd "$ROOT"
else
  command -v ray >/dev/null 2>&1 ||
    die "the 'ray' command is not on PATH: pip install \"ray[default]\" boto3 (same ray version as in $CONFIG)"
  # The cluster's Ray must equal the local one (ray up / ray job talk across both).
  pinned=$(grep -o 'ray\[[a-z,]*\]==[0-9][0-9.]*' "$ROOT/$CONFIG" 2>/dev/null | head -n 1 | sed 's/.*==//' || true)
  local_version=$(ray --version 2>/dev/null | awk '{print $NF}' || true)
  if [ -n "$pinned" ] && [ -n "$local_version" ] && [ "$pinned" != "$local_version" ]; then
    note "warning: local ray is $local_version but $CONFIG installs ray $pinned on the cluster"
  fi
fi
cd "$ROOT"

# Read from the config: the provider's type, and the head's dashboard port if its `ray start`
# sets one (the forward must reach that port, not Ray's default 8265).
provider_type() {
  awk '/^provider:/ {p = 1; next} p && /^[^ #]/ {p = 0} p && $1 == "type:" {print $2; exit}' "$CONFIG"
}
REMOTE_PORT=$(grep -v '^[[:space:]]*#' "$CONFIG" | grep -o -- '--dashboard-port[= ][0-9][0-9]*' | head -n 1 |
  grep -o '[0-9][0-9]*$' || true)
REMOTE_PORT=${REMOTE_PORT:-8265}

# "USER KEY IP" for each worker of a local-provider config (KEY "-" when the config names none),
# read with the Python next to `ray` (its venv has PyYAML), else python3.
local_workers() {
  local py ray_bin
  ray_bin=$(command -v ray 2>/dev/null || true)
  for py in ${ray_bin:+"$(dirname "$ray_bin")/python3"} python3 ""; do
    if [ -n "$py" ] && "$py" -c 'import yaml' 2>/dev/null; then break; fi
  done
  [ -n "$py" ] || die "cannot read the worker IPs from $CONFIG: no python3 with PyYAML (activate ray's venv)"
  "$py" - "$CONFIG" <<'PY' || die "cannot read the worker IPs from $CONFIG"
import os, sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
auth = cfg.get("auth") or {}
key = os.path.expanduser(auth.get("ssh_private_key") or "-")
for ip in (cfg.get("provider") or {}).get("worker_ips") or []:
    print(auth["ssh_user"], key, ip)
PY
}

# `ray down` on a local-provider cluster stops Ray on the head only: the workers' Ray processes
# would run on. Stop them over SSH too, in the login shell Ray's own node commands use (it reads
# ~/.bashrc, where the setup commands put the venv), after the head so nothing restarts them.
stop_local_workers() {
  local user key ip workers
  workers=$(local_workers)
  while read -r user key ip; do
    [ -n "$ip" ] || continue
    local id=()
    [ "$key" = - ] || id=(-i "$key")
    run ssh -n ${id[@]+"${id[@]}"} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o IdentitiesOnly=yes -o ConnectTimeout=30 "$user@$ip" \
      "bash --login -c -i 'source ~/.bashrc; ray stop'" || note "warning: ray stop on $ip failed"
  done <<<"$workers"
}

DASHBOARD="http://127.0.0.1:$PORT"
FWD_PID=""
FWD_DIR=""
FWD_LOG=""

stop_forward() {
  if [ -n "$FWD_PID" ]; then
    # The forward runs in its own process group (set -m below): end it and its ssh child.
    kill -- "-$FWD_PID" 2>/dev/null || kill "$FWD_PID" 2>/dev/null || true
    wait "$FWD_PID" 2>/dev/null || true
    FWD_PID=""
  fi
  if [ -n "$FWD_DIR" ]; then rm -rf "$FWD_DIR"; FWD_DIR=""; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

start_forward() {
  if [ "$DRY_RUN" -eq 1 ]; then
    printf '%s &\n' "$(quote ray dashboard --port "$PORT" --remote-port "$REMOTE_PORT" "$CONFIG")"
    echo "# wait until $DASHBOARD answers"
    return
  fi
  if port_open; then
    die "something already listens on 127.0.0.1:$PORT (a local Ray, or another forward);
  pick a free local port with --port N"
  fi
  FWD_DIR=$(mktemp -d "${TMPDIR:-/tmp}/memscale-forward.XXXXXX")
  trap stop_forward EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # Ray's ssh shares one connection per host (ControlMaster=auto, ControlPersist=10s): the forward
  # would live in that background master, not in the process we stop, and keep the port (and the
  # job server) open for half a minute after we exit. An `ssh` first on the PATH of the forward
  # gives it a connection of its own (ssh keeps the first value of each option).
  mkdir "$FWD_DIR/bin"
  printf '#!/bin/sh\nexec "%s" -o ControlMaster=no -o ControlPath=none "$@"\n' "$(command -v ssh)" >"$FWD_DIR/bin/ssh"
  chmod +x "$FWD_DIR/bin/ssh"
  FWD_LOG="$FWD_DIR/forward.log"
  set -m
  PATH="$FWD_DIR/bin:$PATH" ray dashboard --port "$PORT" --remote-port "$REMOTE_PORT" "$CONFIG" >"$FWD_LOG" 2>&1 &
  FWD_PID=$!
  set +m
  note "port-forward to the head's dashboard: $DASHBOARD (pid $FWD_PID)"
  local i
  for i in $(seq 1 120); do
    if port_open; then return 0; fi
    if ! kill -0 "$FWD_PID" 2>/dev/null; then
      cat "$FWD_LOG" >&2
      FWD_PID=""
      die "ray dashboard $CONFIG exited; is the cluster up? ($PROG --config $CONFIG up)"
    fi
    sleep 1
  done
  cat "$FWD_LOG" >&2
  die "no port-forward on 127.0.0.1:$PORT after 120 s"
}

stop_forward_printed() {
  if [ "$DRY_RUN" -eq 1 ]; then echo "# stop the port-forward (kill its process group)"; else stop_forward; fi
}

job_id() {  # $1: a name -> memscale-NAME-UTCTIME, in the characters Ray job ids accept
  local name
  name=$(printf '%s' "$1" | tr -c 'A-Za-z0-9_-' '-')
  echo "memscale-$name-$(date -u +%Y%m%d-%H%M%S)"
}

submit_job() {  # $1: job id, rest: the entrypoint
  local id=$1; shift
  start_forward
  run ray job submit --address "$DASHBOARD" --working-dir . --submission-id "$id" --no-wait -- "$@"
  if [ "$DRY_RUN" -eq 0 ]; then
    note "job $id submitted. Ctrl-C stops following its logs, not the study."
    note "  follow it again: $0 --config $CONFIG logs $id"
    note "  stop the study:  ray job stop --address $DASHBOARD $id  (while a forward is open)"
  fi
  if [ "$FOLLOW" -eq 1 ]; then
    run ray job logs --address "$DASHBOARD" --follow "$id"
    run ray job status --address "$DASHBOARD" "$id"
  fi
  stop_forward_printed
}

case "$COMMAND" in
  up)
    if [ "$(provider_type)" = local ] && [ -z "${RAY_UP_enable_autoscaler_v2:-}" ]; then
      # Since Ray 2.50 `ray up` starts autoscaler v2, which does not support the local provider
      # (ray-project/ray#57153): the head comes up and the workers never join.
      run env RAY_UP_enable_autoscaler_v2=0 ray up -y "$CONFIG"
    else
      run ray up -y "$CONFIG"
    fi
    ;;
  down)
    run ray down -y "$CONFIG"
    if [ "$(provider_type)" = local ]; then stop_local_workers; fi
    ;;
  status)
    run ray exec "$CONFIG" "ray status"
    ;;
  logs)
    start_forward
    if [ "$NARGS" -eq 1 ]; then
      run ray job logs --address "$DASHBOARD" --follow "${ARGS[0]}"
      run ray job status --address "$DASHBOARD" "${ARGS[0]}"
    else
      run ray job list --address "$DASHBOARD"
    fi
    stop_forward_printed
    ;;
  submit)
    name=$(basename "$SPEC"); name=${name%.*}
    submit_job "$(job_id "$name")" study run "$SPEC" --address auto --results "$RESULTS"
    ;;
  resume)
    name=${STUDY_URI%/}; name=${name##*/}
    submit_job "$(job_id "resume-$name")" study resume "$STUDY_URI" --address auto
    ;;
esac
