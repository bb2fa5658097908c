"""One trial: build the task and model, train with a truncation window, measure memory length.

Pure PyTorch: no Ray, no Optuna. `train` calls `report(metrics, lag_curve, checkpoint)` at every
evaluation; the sweep turns that into a Tune report, a test into a list.
"""
from __future__ import annotations

import contextlib
import math
import platform
import resource
import time
from typing import Any, Callable

import torch

from study import memory_budget
from study.config import Budget, Resolved, flat_params, resolve, seq_len_of
from study.heap import keep_freed_memory
from study.memory import EXTEND, evaluate, is_oom, ladder, read_curve
from study.models import build_model, detach_state
from study.peak import peak_tensor_bytes
from study.tasks import build_task

TERMINAL = ("completed", "pruned", "diverged", "oom", "timeout", "error")
Report = Callable[[dict, list, "dict | None"], None]


def pick_device() -> torch.device:
    # Ray hides GPUs a trial did not ask for and shows the one (or the fraction of one) it got as
    # device 0 (CUDA_VISIBLE_DEVICES), so this follows the spec and pins the trial to its GPU.
    if torch.cuda.is_available():
        torch.cuda.set_device(0)
        return torch.device("cuda", 0)
    return torch.device("cpu")


def precision(device: torch.device, recurrent: bool) -> tuple[str, Callable]:
    """(dtype name, autocast context factory). On CUDA, attention, convolutions and matmuls run
    under bf16 autocast (SDPA then picks its flash or memory-efficient kernel); recurrences stay
    fp32, where rounding compounds over thousands of steps. The CPU path is plain fp32."""
    if device.type == "cuda" and not recurrent and torch.cuda.is_bf16_supported():
        return "bfloat16", lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return "float32", contextlib.nullcontext


class PeakMemory:
    """Peak memory a trial added. CUDA: the allocator's peak. CPU: the resident high-water mark
    (VmHWM) less the resident size at the trial's start; Linux resets VmHWM when "5" is written to
    /proc/self/clear_refs, so a worker process that ran earlier trials does not leak its old peak
    into this one. Elsewhere: ru_maxrss, the process's lifetime peak (an upper bound)."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = self._status("VmRSS")
        except OSError:
            self.base = None

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024      # kB
        raise OSError(key)

    def bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.base is not None:
            try:
                return max(0, self._status("VmHWM") - self.base)
            except OSError:
                pass
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def train_step(model, task, batch, window: int | None, opt, grad_clip: float | None,
               amp: Callable = contextlib.nullcontext) -> float:
    """One optimiser step on one batch. Recurrent models with a window run truncated BPTT: the
    state carries across chunks of `window` steps, the gradient is cut at each boundary, and the
    chunk losses are weighted so the total equals the full-sequence mean loss."""
    opt.zero_grad(set_to_none=True)
    T = batch.x.shape[1]
    if model.recurrent and window is not None and window < T:
        state, total, n = model.init_state(batch.x.shape[0]), 0.0, batch.mask.sum()
        for s in range(0, T, window):
            sl = slice(s, s + window)
            out, state = model(batch.x[:, sl], state)
            m = batch.mask[:, sl]
            if m.any():
                chunk = type(batch)(batch.x[:, sl], batch.y[:, sl], m, batch.lag)
                loss = task.loss(out, chunk) * (m.sum() / n)
                loss.backward()
                total += loss.item()
            state = detach_state(state)
    else:
        with amp():
            out, _ = model(batch.x)
            loss = task.loss(out.float(), batch)
        if model.aux_loss is not None:     # the universal transformer's ponder cost, already weighted
            loss = loss + model.aux_loss
        loss.backward()
        total = loss.item()
    if math.isfinite(total):
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        after = getattr(model, "after_step", None)   # constraint projections (stable_*, indrnn)
        if after:
            after()
    return total


def train(values: dict[str, Any], budget: Budget, report: Report, resume: dict | None = None) -> dict:
    """Run one trial to the end of its budget; returns the final summary (also the last report)."""
    r: Resolved = resolve(values)
    seed = int(values.get("seed", 0))
    device = pick_device()
    if device.type == "cpu":
        keep_freed_memory()     # activations reused between steps, not page-faulted in again (study/heap.py)
    task = build_task(r.task, r.task_cfg)
    seq_len, window = seq_len_of(r), r.train.window
    torch.manual_seed(seed)
    peak = PeakMemory(device)
    too_big = memory_budget.too_big(r, task.io, seq_len, device)     # refuse before allocating
    if too_big:
        return _oom_at_build(r, MemoryError(too_big), report)
    try:
        model = build_model(r.arch, r.model, task.io, seq_len, window).to(device)
    except (RuntimeError, MemoryError) as e:      # a model too big to allocate is a result too
        if not is_oom(e):
            raise
        return _oom_at_build(r, e, report)
    opt = torch.optim.Adam(model.parameters(), lr=r.train.lr, weight_decay=r.train.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    lags = ladder(r.task_cfg.lag, r.task_cfg.lag_dist, r.train.max_lag)
    fpt = model.flops_per_token(seq_len, window)
    dtype, amp = precision(device, model.recurrent)
    tokens_per_step = r.train.batch_size * seq_len
    started = time.perf_counter()

    s = {"step": 0, "iteration": 0, "wall_s": 0.0, "loss_sum": 0.0, "loss_n": 0, "started_at": time.time(),
         "elapsed_s": 0.0}
    if resume:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        gen.set_state(resume["gen"])
        torch.set_rng_state(resume["torch_rng"])
        s = resume["progress"]
    elapsed0 = s["elapsed_s"]

    static = {"params": model.num_params(), "state_size": model.state_size(seq_len, window),
              "reach": model.reach(seq_len, window),
              "flops_per_token": fpt, "device": device.type, "dtype": dtype,
              "host": platform.node(), "torch_version": torch.__version__, **flat_params(r)}

    def snapshot() -> dict:
        return {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "progress": dict(s)}

    def emit(status: str, curve: list[dict], error: str | None = None) -> dict:
        s["iteration"] += 1
        mem, censored = read_curve(curve, r.train.tau, task.memory_rule, task.min_gain) if curve else (None, None)
        tokens = s["step"] * tokens_per_step
        trained_lag = next((c for c in curve if c["lag"] == r.task_cfg.lag), None)
        loss = s["loss_sum"] / s["loss_n"] if s["loss_n"] else None
        done = status != "running"
        out = {**static, "iteration": s["iteration"], "step": s["step"], "steps": s["step"],
               "tokens": tokens, "train_flops": 3.0 * fpt * tokens,   # backward ~ 2x forward
               "wall_s": s["wall_s"], "train_loss": loss, "final_loss": loss,
               "eval_loss": trained_lag["loss"] if trained_lag else None,
               "started_at": s["started_at"], "ended_at": time.time() if done else None,
               "memory_length": mem, "censored": censored, "tau": r.train.tau, "lr": r.train.lr,
               "solved": solved(curve, mem) if curve else None,
               "peak_mem_bytes": peak.bytes(), "peak_tensor_bytes": s.get("step_peak_bytes"),
               "status": status, "error": error}
        s["loss_sum"], s["loss_n"] = 0.0, 0
        # the final state is checkpointed too, so a rerun of a finished trial only re-reports it
        ckpt = snapshot() if done or s["iteration"] % budget.checkpoint_every == 0 else None
        report(out, curve, ckpt)
        return out

    def solved(curve: list[dict], mem: int) -> bool:
        """Solved at the trained lag: the score's lower bound there reaches tau (text: context up
        to the lag helps)."""
        if task.memory_rule == "gain":
            return mem >= task.distance(r.task_cfg.lag)
        row = next((c for c in curve if c["lag"] == r.task_cfg.lag), None)
        return bool(row and row["feasible"] and row["score_lo"] >= r.train.tau)

    def measure(final: bool = False) -> list[dict]:
        """Intermediate evaluations (what Optuna and ASHA see) reuse one probe set; the final one
        draws a fresh probe set and extends the ladder while the curve holds (censoring)."""
        with amp():
            return evaluate(model, task, lags, r.train.eval_batch, seed, device, r.train.max_eval_s, seq_len,
                            final=final, extend=EXTEND if final else 0, tau=r.train.tau)

    model.train()
    status, error = "completed", None
    try:
        while s["step"] < budget.steps:
            batch = task.sample(r.train.batch_size, gen, seq_len=seq_len).to(device)
            t0 = time.perf_counter()
            if s["step"] == min(1, budget.steps - 1) and "step_peak_bytes" not in s:
                # one step per trial under the allocator's accounting (study/peak.py): the second
                # one, when there is one, so Adam's state already exists and is not counted
                loss, s["step_peak_bytes"] = peak_tensor_bytes(
                    lambda: train_step(model, task, batch, window, opt, r.train.grad_clip, amp), device)
            else:
                loss = train_step(model, task, batch, window, opt, r.train.grad_clip, amp)
            s["wall_s"] += time.perf_counter() - t0
            s["step"] += 1
            if not math.isfinite(loss):
                status, error = "diverged", f"loss {loss} at step {s['step']}"
                break
            s["loss_sum"] += loss
            s["loss_n"] += 1
            s["elapsed_s"] = elapsed0 + time.perf_counter() - started    # training and evaluation
            if budget.max_wall_s is not None and s["elapsed_s"] > budget.max_wall_s:
                status, error = "timeout", f"training passed max_wall_s={budget.max_wall_s}"
                break
            if budget.max_flops is not None and 3.0 * fpt * s["step"] * tokens_per_step >= budget.max_flops:
                break
            if s["step"] % budget.eval_every == 0 and s["step"] < budget.steps:
                emit("running", measure())
    except (RuntimeError, MemoryError) as e:
        if not is_oom(e):
            raise
        status, error = "oom", str(e).splitlines()[0][:500]
    curve = measure(final=True) if status in ("completed", "timeout") else []
    return emit(status, curve, error)


def _oom_at_build(r: Resolved, e: BaseException, report: Report) -> dict:
    """The trial's one report when its model could not even be allocated."""
    out = {**flat_params(r), "iteration": 1, "step": 0, "steps": 0, "tokens": 0, "train_flops": 0.0,
           "wall_s": 0.0, "status": "oom", "error": str(e).splitlines()[0][:500], "started_at": time.time(),
           "ended_at": time.time(), "host": platform.node(), "torch_version": torch.__version__,
           "device": pick_device().type, "dtype": "float32", "memory_length": None, "tau": r.train.tau,
           "lr": r.train.lr}
    report(out, [], None)
    return out
