"""Images/s of a training epoch from raw 1024 x 1024 PNGs (decode + resize every time) versus from the cache.

Run: python tests/benchmarks/bench_cache.py [--n 128] [--size 224] [--src 1024] [--workers 2] [--bs 32] [--dir DIR]

Generates --n 8-bit PNGs of --src x --src pixels (the format of NIH ChestX-ray14) in a folder (--dir keeps and
reuses them), then, on the same files and with the same labels frame:
  (a) raw:   one epoch of `cxr_dls` batches that decode and resize every file (`read_xray`), in this process;
  (b) build: `build_cache` resizing them once to --size with --workers processes (paid once);
  (c) cache: epochs of `cxr_dls` batches read from the memory-mapped cache.
Prints images/s of each and the per-epoch speed-up of (c) over (a); the target is at least 10x at 224 px.
"""
import argparse, tempfile, time
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from PIL import Image
from cxr_noisy_lt.datasets import build_cache, cache_frame, read_xray, fake_xray
from cxr_noisy_lt.data import cxr_dls
from cxr_noisy_lt.labels import NIH14

def make_files(d:Path, n:int, src:int, seed:int=0) -> pd.DataFrame:
    "n PNGs of src x src pixels in d (reused if there) and their labels frame (all in the training split)."
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    names = [f"{i:08d}_000.png" for i in range(n)]
    for nm in names:
        if not (d / nm).exists():
            Image.fromarray((fake_xray(rng, src, src) * 255).round().astype(np.uint8)).save(d / nm)
    f = pd.DataFrame({'image': names, 'patient': np.arange(n), 'view': 'PA', 'split': 'train'})
    f.loc[n - 1, 'split'] = 'valid'
    y = (rng.random((n, len(NIH14))) < 0.1).astype(np.float32)
    for j, c in enumerate(NIH14): f[c] = y[:, j]
    return f

def epoch_rate(dl, epochs=1):
    "Images/s over `epochs` full passes of `dl`."
    t, n = time.perf_counter(), 0
    for _ in range(epochs):
        for b in dl: n += len(b[0])
    return n / (time.perf_counter() - t)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=128); p.add_argument('--size', type=int, default=224)
    p.add_argument('--src', type=int, default=1024); p.add_argument('--workers', type=int, default=2)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--dir', type=str, default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    base = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix='bench_cache_'))
    t = time.perf_counter()
    frame = make_files(base / 'images', a.n, a.src)
    print(f"{a.n} PNGs of {a.src}x{a.src} px in {base / 'images'} ({time.perf_counter() - t:.0f}s to prepare); "
          f"{sum(f.stat().st_size for f in (base / 'images').glob('*.png')) / a.n / 1e3:.0f} kB each")
    kw = dict(bs=a.bs, aug=False, stats=(0.5, 0.25), seed=0)
    # (a) decode + resize the raw files at every epoch
    t = time.perf_counter()
    for fn in frame['image'][:16]: read_xray(base / 'images' / fn, a.size)
    single = 16 / (time.perf_counter() - t)
    raw = epoch_rate(cxr_dls(frame, NIH14, path=base / 'images', reader=read_xray, size=a.size, **kw).train)
    # (b) build the cache once, (c) read it
    out = base / f'cache_{a.size}'
    for s in ('.npy', '.json'): (out.parent / (out.name + s)).unlink(missing_ok=True)
    t = time.perf_counter()
    imgs = build_cache(frame, base / 'images', a.size, out, workers=a.workers, progress=False, chunk=16)
    build = a.n / (time.perf_counter() - t)
    cached = epoch_rate(cxr_dls(cache_frame(frame, imgs), NIH14, images=imgs, **kw).train, epochs=5)
    print(f"{'mode':<46} {'images/s':>9}")
    print(f"{'(a) raw files: read_xray alone':<46} {single:9.1f}")
    print(f"{'(a) raw files: epoch of cxr_dls batches':<46} {raw:9.1f}")
    print(f"{f'(b) build_cache, {a.workers} worker(s), once':<46} {build:9.1f}")
    print(f"{'(c) cache: epoch of cxr_dls batches':<46} {cached:9.1f}")
    ratio = cached / raw
    print(f"per-epoch speed-up of the cache at {a.size} px: {ratio:.0f}x "
          f"({'meets' if ratio >= 10 else 'MISSES'} the 10x target)")

if __name__ == '__main__': main()
