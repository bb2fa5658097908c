"""GPU throughput and model-FLOPs utilisation of the training step (bench/gpu_check.sh runs it).

Per family and seq_len: tokens/s of one training step (forward, loss, backward, Adam) under the
precision a trial gets on that device (study.train.precision: bf16 autocast for attention,
convolution and other non-recurrent families; fp32 for recurrences), achieved FLOP/s =
3 x flops_per_token x tokens / step seconds (the analytic count the study stores as train_flops),
and MFU against two peaks: the best square matmul measured here in the same dtype, and the
datasheet's dense peak when the GPU is one we know (H100/H200 SXM: 989 TFLOP/s bf16, 67 fp32;
A100: 312 bf16, 19.5 fp32, NVIDIA's data sheets). fp32 recurrences on cuDNN may use TF32 tensor
cores, so their MFU against the fp32 peak can pass 100%.

    .venv/bin/python bench/bench_gpu.py [--device cpu --tiny]   # cpu/tiny: checks the code path only
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import median, table, write               # noqa: E402
from study.models import IO, MODELS, build_model            # noqa: E402
from study.train import precision                           # noqa: E402

DATASHEET = {"H200": {"bfloat16": 989e12, "float32": 67e12}, "H100": {"bfloat16": 989e12, "float32": 67e12},
             "A100": {"bfloat16": 312e12, "float32": 19.5e12}}
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, dtype, n: int, runs: int) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(runs):
        a @ b
    sync(device)
    return 2 * n ** 3 * runs / (time.perf_counter() - t)


def datasheet(device) -> dict | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in DATASHEET.items() if k in name), None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="d_model 16, seq_len 32, 2 steps: only checks the code runs")
    ap.add_argument("--archs", nargs="*", default=["transformer", "linear_transformer", "tcn", "lstm", "gru"])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device; skipped")
        return 0
    d, B, lens, runs, n = (16, 2, [32], 2, 64) if args.tiny else (512, 16, [1024, 4096], args.runs, 8192)
    peaks = {k: matmul_peak(device, v, n, runs) for k, v in DTYPES.items()}
    sheet = datasheet(device)
    print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}: measured matmul peak "
          + ", ".join(f"{k} {v / 1e12:.1f} TFLOP/s" for k, v in peaks.items())
          + (f"; datasheet {', '.join(f'{k} {v / 1e12:.0f}' for k, v in sheet.items())}" if sheet else ""), flush=True)
    io = IO(d_out=16, vocab_size=16)
    rows, out = [], []
    for arch in args.archs:
        for T in lens:
            torch.manual_seed(0)
            m = build_model(arch, MODELS.get(arch).config(d_model=d), io, T, None).to(device).train()
            opt = torch.optim.Adam(m.parameters(), lr=1e-4)
            dtype, amp = precision(device, m.recurrent)
            x = torch.randint(0, 16, (B, T), device=device)

            def step():
                opt.zero_grad(set_to_none=True)
                with amp():
                    y, _ = m(x)
                    loss = F.cross_entropy(y.float().reshape(-1, 16), x.reshape(-1))
                (loss + (m.aux_loss if m.aux_loss is not None else 0)).backward()
                opt.step()
            step()
            times = []
            for _ in range(runs):
                sync(device)
                t = time.perf_counter()
                step()
                sync(device)
                times.append(time.perf_counter() - t)
            s = median(times)
            flops = 3 * m.flops_per_token(T, None) * B * T / s
            mfu = flops / peaks[dtype]
            mfu_sheet = flops / sheet[dtype] if sheet else None
            rows.append([arch, T, dtype, round(B * T / s), f"{flops / 1e12:.2f}", f"{100 * mfu:.0f}%",
                         f"{100 * mfu_sheet:.0f}%" if mfu_sheet is not None else "—"])
            out.append({"arch": arch, "seq_len": T, "batch": B, "d_model": d, "dtype": dtype, "step_s": times,
                        "tok_s": B * T / s, "flop_s": flops, "mfu_measured_peak": mfu, "mfu_datasheet": mfu_sheet})
            print(rows[-1], flush=True)
            del m, opt
    print(table(["arch", "seq_len", "dtype", "tok/s", "TFLOP/s", "MFU (measured peak)", "MFU (datasheet)"], rows))
    if not args.tiny:
        write("gpu", {"peaks": peaks, "datasheet": sheet, "rows": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
