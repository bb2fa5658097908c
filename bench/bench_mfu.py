"""Benchmark 2: model-FLOPs utilisation of the training step on this CPU.

Peak: the best of several fp32 square matmuls (torch.mm, n = 1024..4096), measured in the same run
with the same thread count. Achieved: 3 x flops_per_token x tokens per step (the analytic count the
study stores as train_flops: backward ~ 2x forward) over the median step time. MFU = achieved / peak.
For `transformer` the analytic count charges every query all T keys (the non-causal convention of
PaLM's 6N + 12 L H Q T, Chowdhery et al. 2022 app. B), so causal attention's skipped half counts.

    .venv/bin/python bench/bench_mfu.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import interleaved, loadavg, median, table, timeit, write   # noqa: E402
from study.models import IO, MODELS, build_model                            # noqa: E402

IO_ = IO(d_out=64, vocab_size=64)


def matmul_peak(sizes, runs) -> tuple[float, dict]:
    per = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        per[n] = 2 * n ** 3 / median(timeit(lambda: torch.mm(a, b), runs, warmup=2))
    return max(per.values()), per


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a trial gets 1 CPU; 2 threads on a loaded 2-core machine thrash)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = loadavg()
    runs = 2 if args.quick else args.runs
    peak, per = matmul_peak([1024, 2048] if args.quick else [1024, 2048, 4096], runs)
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s {({n: round(v / 1e9, 1) for n, v in per.items()})}")
    B, T = (8, 256) if args.quick else (16, 512)
    rows, out = [], []
    for arch in ["transformer", "lstm"]:
        for d in [256, 512]:
            torch.manual_seed(0)
            cfg = MODELS.get(arch).config(d_model=d)
            m = build_model(arch, cfg, IO_, T, None).train()
            opt = torch.optim.Adam(m.parameters(), lr=1e-4)
            x = torch.randint(0, 64, (B, T))

            def run():
                opt.zero_grad(set_to_none=True)
                out_, _ = m(x)
                F.cross_entropy(out_.reshape(-1, 64), x.reshape(-1)).backward()
                opt.step()
            t = median(interleaved({"step": run}, runs, warmup=2)["step"])
            flops = 3 * m.flops_per_token(T, None) * B * T
            rows.append([arch, d, cfg.n_layers, f"{B}x{T}", round(t, 3), round(flops / t / 1e9, 1),
                         f"{100 * flops / t / peak:.0f}%"])
            out.append({"arch": arch, "d_model": d, "n_layers": cfg.n_layers, "batch": B, "seq_len": T,
                        "step_s": t, "flops_per_step": flops, "achieved_flops": flops / t, "mfu": flops / t / peak})
            print(rows[-1], flush=True)
    print(table(["arch", "d_model", "layers", "batch x seq_len", "step s", "GFLOP/s", "MFU"], rows))
    peak2, _ = matmul_peak([2048], runs)       # again after: the load may have moved
    print(f"peak again after: {peak2 / 1e9:.1f} GFLOP/s; load: {load0} -> {loadavg()}")
    write("mfu", {"load_before": load0, "peak_flops": peak, "peak_by_n": per, "peak_after": peak2,
                  "runs": runs, "rows": out})


if __name__ == "__main__":
    main()
