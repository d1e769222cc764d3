"""Training time on a CPU with glibc's allocator as it comes and with `keep_cpu_memory`, in one run.

    python tests/benchmarks/bench_cpu_memory.py [--epochs 2] [--rounds 2] [--threads 1]

Each measurement is one process training BCE the way a run of `cxr_bench --profile full` does (the
phantom's 4,000 training images, `narrow_resnet10`, 64 px, batches of 64, channels-last), for
`--epochs` epochs; the last epoch is measured: wall time, CPU time in user and kernel mode, minor page
faults. The two settings take turns (`CXR_KEEP_CPU_MEMORY=0` turns the setting off), `--rounds` times,
so a load on the machine falls on both alike; the figures are medians over rounds. The final training
loss of the two settings is printed too: the setting changes no computed value.
"""
import argparse, json, os, subprocess, sys, statistics
from pathlib import Path
ROOT = Path(__file__).resolve().parents[2]

CHILD = r'''
import json, resource, sys, time, warnings
warnings.filterwarnings('ignore')
import torch
torch.set_num_threads(int(sys.argv[2]))
from fastai.callback.core import Callback
from cxr_noisy_lt.phantom import make_phantom
from cxr_noisy_lt.bench import Regime, build_learner, get_method, noisy_frame
from cxr_noisy_lt.learner import keep_cpu_memory
reg = Regime()
ph = make_phantom(n=reg.n, size=reg.size, seed=reg.phantom_seed, splits=reg.splits, progress=False)
learn = build_learner(get_method('bce'), noisy_frame(ph, 'none', 0), ph.images, ph.classes, reg, seed=0, phantom=ph)
rows = []
class T(Callback):
    order = 99
    def before_epoch(self): self.t, self.r = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    def after_train(self):
        r = resource.getrusage(resource.RUSAGE_SELF)
        rows.append(dict(wall=time.perf_counter() - self.t, user=r.ru_utime - self.r.ru_utime,
                         sys=r.ru_stime - self.r.ru_stime, faults=r.ru_minflt - self.r.ru_minflt))
learn.add_cb(T())
with learn.no_bar(), learn.no_logging(): learn.fit(int(sys.argv[1]), reg.lr)
print(json.dumps(dict(rows[-1], kept=keep_cpu_memory(), loss=float(learn.recorder.losses[-1]))))
'''

def measure(keep:bool, epochs:int, threads:int) -> dict:
    env = dict(os.environ, CXR_KEEP_CPU_MEMORY='1' if keep else '0', PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, '-c', CHILD, str(epochs), str(threads)], capture_output=True, text=True, env=env)
    if r.returncode: raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--epochs', type=int, default=2); ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    res = {False: [], True: []}
    for _ in range(a.rounds):
        for keep in (False, True): res[keep].append(measure(keep, a.epochs, a.threads))
    med = {k: {f: statistics.median(r[f] for r in v) for f in ('wall', 'user', 'sys', 'faults')} for k, v in res.items()}
    print(f"BCE epoch of the full profile (4,000 images, narrow_resnet10, 64 px, batch 64), {a.threads} thread(s), "
          f"epoch {a.epochs} of {a.epochs}, median of {a.rounds} rounds")
    print(f"{'allocator':32} {'wall s':>7} {'user s':>7} {'sys s':>7} {'page faults':>12} {'images/s':>9}")
    for keep, name in ((False, "glibc's defaults"), (True, 'keep_cpu_memory')):
        m = med[keep]
        print(f"{name:32} {m['wall']:7.2f} {m['user']:7.2f} {m['sys']:7.2f} {m['faults']:12,.0f} {4000 / m['wall']:9.0f}")
    print(f"speed-up {med[False]['wall'] / med[True]['wall']:.2f}x; page faults / {med[False]['faults'] / max(med[True]['faults'], 1):,.0f}")
    print(f"setting in force: {[r['kept'] for r in res[True]]} (off: {[r['kept'] for r in res[False]]}); "
          f"final training loss {res[False][0]['loss']:.10f} without, {res[True][0]['loss']:.10f} with")

if __name__ == '__main__': main()
