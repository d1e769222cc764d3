"""Throughput of `cxr_dls` from a uint8 image array, on one CPU core.

Run: python tests/benchmarks/bench_data.py [--n 4096] [--sizes 64 128] [--bs 64]
Prints images/s for a full training epoch with and without augmentation, and, for comparison, a plain
per-item fastai DataLoader over the same dataset (no batch transforms).
"""
import argparse, time
import numpy as np
import torch
from fastai.data.load import DataLoader
from cxr_noisy_lt.data import cxr_dls, patient_split
from cxr_noisy_lt.labels import NIH14

def synthetic(n, size, seed=0):
    "A labels frame and a random uint8 image array (used when the phantom is not available)."
    import pandas as pd
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    frame = pd.DataFrame({'image': np.arange(n), 'patient': np.arange(n) // 3})
    y = (rng.random((n, len(NIH14))) < 0.1).astype(np.float32)
    for j, c in enumerate(NIH14): frame[c] = y[:, j]
    return patient_split(frame, valid=0.1, test=0.2), images, 'synthetic'

def source(n, size):
    try: from cxr_noisy_lt.phantom import make_phantom
    except ImportError: return synthetic(n, size)
    ph = make_phantom(n, size, seed=0, progress=False)
    return ph.frame, ph.images, 'phantom'

def rate(dl, epochs=2):
    "Images per second over `epochs` full passes (after one warm-up batch)."
    dl.one_batch()
    t, n = time.perf_counter(), 0
    for _ in range(epochs):
        for b in dl: n += len(b[0])
    return n / (time.perf_counter() - t)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=4096); p.add_argument('--bs', type=int, default=64)
    p.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
    a = p.parse_args()
    torch.set_num_threads(1)
    print(f"{'source':>9} {'size':>4} {'mode':>22} {'images/s':>9}")
    for size in a.sizes:
        frame, images, name = source(a.n, size)
        for aug in (False, True):
            dls = cxr_dls(frame, NIH14, images, bs=a.bs, aug=aug, seed=0)
            print(f"{name:>9} {size:>4} {'batch, aug' if aug else 'batch, no aug':>22} {rate(dls.train):9.0f}", flush=True)
        ds = dls.train.dataset
        dl = DataLoader(ds, bs=a.bs, shuffle=True, drop_last=True)
        print(f"{name:>9} {size:>4} {'per item, no aug':>22} {rate(dl, 1):9.0f}", flush=True)

if __name__ == '__main__': main()
