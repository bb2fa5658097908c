"""Benchmark: the elementwise recurrences (indrnn, brc, nbrc), three ways, one training step each.

  autograd   the plain per-step loop under autograd (the models' `fast = False` reference)
  hand/py    recurrences.py's hand-written backward with plain Python loops
  hand/jit   the same with the loops `torch.jit.script`ed (what the models run)

    .venv/bin/python bench/bench_recurrence_jit.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import interleaved, loadavg, median, table, write   # noqa: E402
from study.models import IO, MODELS, build_model, recurrences   # noqa: E402

LOOPS = ["_indrnn_forward", "_linear_backward", "_brc_forward", "_nbrc_backward"]


SCRIPTED = {name: getattr(recurrences, name) for name in LOOPS}


def use_script_cached(on: bool) -> None:
    """Point recurrences.py at the scripted loops (as shipped) or at their plain Python versions."""
    for name in LOOPS:
        setattr(recurrences, name, SCRIPTED[name] if on else getattr(recurrences, name + "_py"))


def step_fn(m, x):
    def step():
        m.zero_grad(set_to_none=True)
        y, _ = m(x)
        y.pow(2).mean().backward()
    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a trial gets 1 CPU; 2 threads on a loaded 2-core machine thrash)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = loadavg()
    lens, runs, B, d = ([256], 2, 8, 64) if args.quick else ([256, 1024], 5, 16, 128)
    rows, out = [], []
    for arch in ["indrnn", "brc", "nbrc"]:
        for T in lens:
            torch.manual_seed(0)
            m = build_model(arch, MODELS.get(arch).config(d_model=d), IO(d_out=8, vocab_size=16), T, None)
            x = torch.randint(0, 16, (B, T))
            def variant(mode):
                def run():
                    m.fast = mode != "autograd"
                    use_script_cached(mode == "hand/jit")
                    step_fn(m, x)()
                return run
            times = interleaved({k: variant(k) for k in ["autograd", "hand/py", "hand/jit"]}, runs)
            t = {k: median(v) for k, v in times.items()}
            tok = B * T
            rows.append([arch, T, *(round(tok / t[k]) for k in t), round(t["autograd"] / t["hand/jit"], 2),
                         round(t["hand/py"] / t["hand/jit"], 2)])
            out.append({"arch": arch, "seq_len": T, "batch": B, "d_model": d, "median_s": t, "runs_s": times})
    print(table(["arch", "seq_len", "autograd tok/s", "hand/py tok/s", "hand/jit tok/s", "jit vs autograd",
                 "jit vs py"], rows))
    print("load:", load0, "->", loadavg())
    write("recurrence_jit", {"load_before": load0, "runs": runs, "rows": out})


if __name__ == "__main__":
    main()
