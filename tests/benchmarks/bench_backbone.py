"""Training and inference speed of the benchmark's backbone against resnet18 at 64 px, on 1 and 2 threads, in one run.

    python tests/benchmarks/bench_backbone.py [--size 64] [--bs 64] [--steps 20] [--rounds 3]

Each step is a forward and backward pass and an Adam update on a batch of one-channel images, the
work of one training step of `cxr_bench` (the DataLoader is not timed: from the uint8 cache it is tens
of thousands of images per second); inference runs on batches of the same size, as `predict_split` does.
The backbones take turns in every round, so a load on the machine falls on all of them alike; the figure
is the median over rounds. Channels-last is what `cxr_learner` uses by default; both backbones are shown
both ways. The allocator is set as `cxr_learner` sets it (`keep_cpu_memory`).
"""
import argparse, sys, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
warnings.filterwarnings('ignore')
import numpy as np, torch

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', type=int, default=64); ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--steps', type=int, default=20); ap.add_argument('--rounds', type=int, default=3)
    a = ap.parse_args()
    from cxr_noisy_lt.learner import cxr_model, keep_cpu_memory
    print(f"keep_cpu_memory: {keep_cpu_memory()}")
    cands = [('narrow_resnet10', True), ('narrow_resnet10', False), ('resnet18', True), ('resnet18', False)]
    x = torch.randn(a.bs, 1, a.size, a.size); y = (torch.rand(a.bs, 14) < .1).float()
    lf = torch.nn.BCEWithLogitsLoss()
    res = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        models = {}
        for arch, cl in cands:
            torch.manual_seed(0)
            m = cxr_model(arch, 14)
            if cl: m = m.to(memory_format=torch.channels_last)
            models[(arch, cl)] = (m, torch.optim.Adam(m.parameters(), 1e-3))
        for r in range(a.rounds + 1):                              # round 0 warms up
            for k, (m, opt) in models.items():
                m.train(); t = time.perf_counter()
                for _ in range(a.steps): opt.zero_grad(); lf(m(x), y).backward(); opt.step()
                tr = a.bs * a.steps / (time.perf_counter() - t)
                m.eval(); t = time.perf_counter()
                with torch.inference_mode():
                    for _ in range(a.steps): m(x)
                inf = a.bs * a.steps / (time.perf_counter() - t)
                if r: res.setdefault((threads, *k), []).append((tr, inf))
    print(f"{a.size} px, batch {a.bs}, {a.steps} steps x {a.rounds} rounds; median images/s")
    print(f"{'threads':>7} {'backbone':>16} {'memory':>14} {'train img/s':>12} {'infer img/s':>12} {'train vs resnet18 (same format)':>32}")
    for (threads, arch, cl), v in res.items():
        tr, inf = np.median([t for t, _ in v]), np.median([i for _, i in v])
        ref = np.median([t for t, _ in res[(threads, 'resnet18', cl)]])
        print(f"{threads:>7} {arch:>16} {'channels_last' if cl else 'contiguous':>14} {tr:12.0f} {inf:12.0f} {tr / ref:31.1f}x")

if __name__ == '__main__': main()
