"""Run `cxr_bench --profile gpu` once and report what a GPU run costs: images/s per method, GPU utilisation, wall time.

    python tests/benchmarks/gpu_profile.py [--out gpu_run] [--workers 1] [any cxr_bench regime option: --n 40000 --epochs 12 ...]

Samples `nvidia-smi` (utilisation and memory) once a second while the grid runs, then prints one line
per method: training images per second (training images x epochs / training seconds, from the run's
`curves.csv`), seconds per run, and the grid's wall time with the mean and peak GPU utilisation. On a
machine without `nvidia-smi` (e.g. to check this script on a CPU with `--device cpu`) utilisation is
reported as unavailable.
"""
import argparse, json, shutil, subprocess, sys, threading, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import pandas as pd

def sample_gpu(stop:threading.Event, rows:list, every:float=1.0):
    "Append (utilisation %, memory MiB) of GPU 0 every `every` seconds until `stop` is set."
    while not stop.is_set():
        try:
            out = subprocess.run(['nvidia-smi', '--query-gpu=utilization.gpu,memory.used', '--format=csv,noheader,nounits', '-i', '0'],
                                 capture_output=True, text=True, timeout=10).stdout.strip().split(',')
            rows.append((float(out[0]), float(out[1])))
        except Exception: pass
        stop.wait(every)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default='gpu_run'); ap.add_argument('--workers', type=int, default=1)
    for k, t in [('device', str), ('amp', str), ('methods', str), ('noise', str), ('seeds', str), ('n', int), ('splits', str),
                 ('size', int), ('epochs', int), ('bs', int), ('lr', float), ('arch', str)]:
        ap.add_argument(f'--{k}', type=t, default=None)
    a = ap.parse_args()
    args = ['cxr_bench', '--profile', 'gpu', '--out', a.out, '--workers', str(a.workers)]
    for k in ('device', 'amp', 'methods', 'noise', 'seeds', 'n', 'splits', 'size', 'epochs', 'bs', 'lr', 'arch'):
        if getattr(a, k) is not None: args += [f'--{k}', str(getattr(a, k))]
    have_smi = shutil.which('nvidia-smi') is not None
    stop, util = threading.Event(), []
    th = threading.Thread(target=sample_gpu, args=(stop, util), daemon=True)
    if have_smi: th.start()
    t0 = time.time()
    r = subprocess.run(args)
    wall = time.time() - t0
    stop.set()
    if r.returncode: sys.exit(f"gpu_profile: cxr_bench failed with exit code {r.returncode}")
    out = Path(a.out)
    run = json.loads((out / 'run.json').read_text())
    cfg = run['config']
    curves = pd.read_csv(out / 'curves.csv')
    n_train = int(round(cfg['n'] * cfg['splits'][0]))
    print(f"\n{cfg['arch']}, {cfg['size']} px, batch {cfg['bs']}, {cfg['epochs']} epochs, amp {cfg['amp']}, device {cfg['device']}; "
          f"about {n_train} training images")
    secs = pd.Series(run['seconds'])
    for m, c in curves.groupby('method', sort=False):
        main_stage = c[c['stage'].isin(['main', 'stage1'])]
        ips = n_train * len(main_stage) / main_stage['train_seconds'].sum()
        per_run = secs[[k for k in secs.index if k.split('|')[0] == m]].mean()
        print(f"{m:14} {ips:9.0f} training images/s (epochs of the full training set)   {per_run:7.0f} s per run")
    if util:
        u = pd.DataFrame(util, columns=['util', 'mem'])
        print(f"GPU utilisation: mean {u['util'].mean():.0f}%, peak {u['util'].max():.0f}%; memory peak {u['mem'].max():.0f} MiB "
              f"({len(u)} samples)")
    else: print("GPU utilisation: unavailable (no nvidia-smi)")
    print(f"grid wall time {wall:.0f} s for {len(secs)} runs")

if __name__ == '__main__': main()
