"""Phantom generation speed on one core: images/s at 64 and 128 px (targets: 1,000 and 300).

    python tests/benchmarks/bench_phantom.py [--n 3000] [--sizes 64 128] [--repeat 3]

Numpy and torch use one thread and the process is pinned to one CPU. The time covers everything
`make_phantom(cache_dir=False)` does after the NIH metadata is loaded once: sampling patients, drawing
the scene (lesions, boxes, gaze) and rendering. Rates are images per second of this process's CPU time
(`time.process_time`, i.e. per busy core, which other processes on a shared machine do not change) and
per second of wall-clock time (which they do); the best of `--repeat` runs is reported.
"""
import os
for v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMEXPR_NUM_THREADS'): os.environ[v] = '1'
import argparse, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))      # run from a checkout without installing
import numpy as np
import torch

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=3000)
    ap.add_argument('--sizes', type=int, nargs='+', default=[64, 128])
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--cpu', type=int, default=None, help='CPU to pin to (default: the first allowed)')
    a = ap.parse_args()
    torch.set_num_threads(1)
    if hasattr(os, 'sched_setaffinity'):
        os.sched_setaffinity(0, {a.cpu if a.cpu is not None else min(os.sched_getaffinity(0))})
    from cxr_noisy_lt.phantom import make_phantom, nih_metadata, sample_nih, build_scene, render
    nih_metadata()
    targets = {64: 1000, 128: 300}
    print(f"n={a.n}, one core (affinity {sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}), "
          f"torch threads {torch.get_num_threads()}")
    for size in a.sizes:
        make_phantom(n=200, size=size, seed=1, cache_dir=False, progress=False)       # warm-up: texture bank
        cpu, wall, ren = [], [], []
        for r in range(a.repeat):
            t, w = time.process_time(), time.perf_counter()
            make_phantom(n=a.n, size=size, seed=r, cache_dir=False, progress=False)
            cpu.append(time.process_time() - t); wall.append(time.perf_counter() - w)
            meta = sample_nih(a.n, r); P, prims, _ = build_scene(meta, r)
            bs = max(8, 2**18 // size**2)
            t = time.process_time()
            for s in range(0, a.n, bs): render(P, prims, np.arange(s, min(s + bs, a.n)), size, r)
            ren.append(time.process_time() - t)
        rate, wrate, rrate = a.n / min(cpu), a.n / min(wall), a.n / min(ren)
        tgt = targets.get(size)
        print(f"{size:4d} px: {rate:7.0f} images/s end to end (CPU time), {wrate:7.0f} images/s (wall clock), "
              f"{rrate:7.0f} images/s rendering only (CPU time)"
              + (f"  target {tgt}: {'ok' if rate >= tgt else 'MISSED'}" if tgt else ''))

if __name__ == '__main__': main()
