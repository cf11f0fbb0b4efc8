"""Batched packs (trainers.train_batched) against the same members one by one (trainers.train).

A pack is M members of one width that differ in learning rate and seed (lr = 2^-6 .. spread over
2 octaves, seeds 0..M-1), trained for ``--epochs`` on a Fashion-MNIST subset (784 inputs, 10
classes, batch 128, MSE, μP, tanh, depth 3). Each figure is the ratio of wall times measured in
the same run: (one by one) / (batched), so > 1 means the batched pack is faster. The two sides take
turns, in a new random order each repeat, and the table gives the median ratio over ``--repeats``
with the range in brackets; a shared machine moves both sides together. The first row prints the
device (``lscpu``'s model name on the CPU, the CUDA device's name on a GPU).

    python benchmarks/batched_bench.py                       # CPU, widths 64 256 1024, M 8 16
    python benchmarks/batched_bench.py --device cuda --members 8 16 64
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time

import torch

from trainers import TrainerConfig, batchable, load_fashion_mnist, make_trainer, train, train_batched


def device_name(device: str) -> str:
    """``lscpu``'s "Model name" for the CPU, or the CUDA device's name."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown CPU"
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return "unknown CPU"


def pack(algorithm: str, width: int, members: int, device: str) -> list[TrainerConfig]:
    """M members at one width: lr spread over 2 octaves around 2^-5, seeds 0..M-1."""
    base = TrainerConfig(algorithm=algorithm, width=width, base_width=64, device=device, inference_steps=5)
    return [base.replace(lr=2.0 ** (-6 + 2 * i / max(1, members - 1)), seed=i) for i in range(members)]


def one_by_one(configs: list[TrainerConfig], data, epochs: int, batch: int) -> float:
    """Wall seconds of the members trained one after the other, as the orchestrator builds them."""
    t0 = time.perf_counter()
    for cfg in configs:
        torch.manual_seed(cfg.seed)
        train(make_trainer(cfg, data.input_dim, data.output_dim), data, epochs, batch, seed=cfg.seed)
    _sync(configs[0].device)
    return time.perf_counter() - t0


def batched(configs: list[TrainerConfig], data, epochs: int, batch: int) -> float:
    """Wall seconds of the same members as one batched pack."""
    t0 = time.perf_counter()
    train_batched(configs, data, epochs, batch)
    _sync(configs[0].device)
    return time.perf_counter() - t0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--algorithm", nargs="+", default=["bp"], choices=["bp", "pc"])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--members", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--subset", type=int, default=2560, help="Fashion-MNIST training images (default 2560)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_fashion_mnist(subset=args.subset, test_subset=1000)
    print(
        f"device: {device_name(args.device)} ({args.device}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"Fashion-MNIST {args.subset} train / 1000 test, {args.epochs} epoch(s), batch {args.batch}, float32")
    print("| algorithm | width | M | one by one (s) | batched (s) | ratio (one by one / batched) |")
    print("|---|---|---|---|---|---|")
    rng = random.Random(0)
    for algorithm in args.algorithm:
        for width in args.widths:
            for m in args.members:
                configs = pack(algorithm, width, m, args.device)
                assert batchable(configs)
                one_by_one(configs[:2], data, 1, args.batch)  # warm-up: _products times its backends per shape
                batched(configs[:2], data, 1, args.batch)  # and the first calls, allocator
                times: dict[str, list[float]] = {"one": [], "batched": []}
                for _ in range(args.repeats):
                    sides = [("one", one_by_one), ("batched", batched)]
                    rng.shuffle(sides)
                    for name, fn in sides:
                        times[name].append(fn(configs, data, args.epochs, args.batch))
                ratios = [a / b for a, b in zip(times["one"], times["batched"])]
                print(
                    f"| {algorithm} | {width} | {m} | {statistics.median(times['one']):.2f} | "
                    f"{statistics.median(times['batched']):.2f} | {statistics.median(ratios):.2f} "
                    f"[{min(ratios):.2f}–{max(ratios):.2f}] |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
