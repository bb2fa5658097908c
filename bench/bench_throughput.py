"""Benchmark 1: training throughput (tokens/s) per arch, our path versus the naive per-step loop.

One training step = forward over the whole sequence (window `full`), cross-entropy, backward, Adam.
"ours" is what study/train.py runs. "naive" is what a researcher would write without the
parallel forms: the model called one token at a time with its carried state (the recurrent
families' step loop), the loss and backward over all steps, then Adam. Non-recurrent families have
no per-step form; for them the naive column is blank, except the windowed transformer, whose naive
path is the (T, T) banded mask instead of blockwise attention. Variants are timed round-robin in
one run (bench/common.py `interleaved`), so a change in load hits both; medians of `--runs`.

    .venv/bin/python bench/bench_throughput.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import interleaved, loadavg, median, table, write   # noqa: E402
from study.models import IO, MODELS, build_model, transformer         # noqa: E402

IO_ = IO(d_out=16, vocab_size=16)


def step(model, x, y, opt, per_step: bool):
    def run():
        opt.zero_grad(set_to_none=True)
        if per_step:
            state, outs = model.init_state(x.shape[0]), []
            for t in range(x.shape[1]):
                o, state = model(x[:, t:t + 1], state)
                outs.append(o)
            out = torch.cat(outs, 1)
        else:
            out, _ = model(x)
        loss = F.cross_entropy(out.reshape(-1, IO_.d_out), y.reshape(-1))
        if model.aux_loss is not None:
            loss = loss + model.aux_loss
        loss.backward()
        opt.step()
    return run


class DenseMask:
    """Context manager: the windowed transformer on the (T, T) banded mask (the naive path)."""
    def __enter__(self):
        self.old, transformer.BLOCK = transformer.BLOCK, 10 ** 9

    def __exit__(self, *exc):
        transformer.BLOCK = self.old


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="seq_len 256 and 1024, 1 run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a trial gets 1 CPU; 2 threads on a loaded 2-core machine thrash)")
    ap.add_argument("--archs", nargs="*", help="only these archs (window-128 transformer: transformer@128)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = loadavg()
    lens, runs = ([256, 1024], 1) if args.quick else ([256, 1024, 4096], args.runs)
    cases = [(a, None) for a in MODELS.names()] + [("transformer", 128)]
    if args.archs:
        cases = [(a, w) for a, w in cases if (a if w is None else f"{a}@{w}") in args.archs]
    rows, out = [], []
    for arch, window in cases:
        cls = MODELS.get(arch).cls
        for T in lens:
            torch.manual_seed(0)
            cfg = MODELS.get(arch).config(d_model=128)
            m = build_model(arch, cfg, IO_, T, window).train()
            opt = torch.optim.Adam(m.parameters(), lr=1e-4)
            g = torch.Generator().manual_seed(0)
            x = torch.randint(0, 16, (args.batch, T), generator=g)
            y = torch.randint(0, 16, (args.batch, T), generator=g)
            fns = {"ours": step(m, x, y, opt, False)}
            if cls.recurrent:
                slow = step(m, x, y, opt, True)

                def naive(slow=slow):       # indrnn/brc/nbrc: also the autograd cell, not recurrences.py
                    m.fast = False
                    slow()
                    m.fast = True
                fns["naive"] = naive
            elif window is not None:
                dense = step(m, x, y, opt, False)

                def naive(dense=dense):
                    with DenseMask():
                        dense()
                fns["naive"] = naive
            times = interleaved(fns, runs, warmup=1)
            tok = args.batch * T
            ours = tok / median(times["ours"])
            naive = tok / median(times["naive"]) if "naive" in times else None
            name = arch if window is None else f"{arch} (window {window})"
            rows.append([name, T, round(ours), round(naive) if naive else "—",
                         f"{ours / naive:.1f}x" if naive else "—"])
            out.append({"arch": arch, "window": window, "seq_len": T, "batch": args.batch, "d_model": 128,
                        "ours_tok_s": ours, "naive_tok_s": naive, "runs_s": times})
            print(rows[-1], flush=True)
    print(table(["arch", "seq_len", "ours tok/s", "naive per-step tok/s", "speed-up"], rows))
    print("load:", load0, "->", loadavg())
    write("throughput", {"load_before": load0, "runs": runs, "rows": out})


if __name__ == "__main__":
    main()
