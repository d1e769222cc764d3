"""Does BCE memorise the label noise on the phantom, and when? One run, figures per epoch.

    python tests/benchmarks/noise_memorization.py [--noise symmetric:0.2] [--n 5000] [--epochs 16] [--lr 2e-3] [--threads 1]

Noise-robust methods such as NVUM (early-learning regularisation) act against memorisation: the late phase
of training in which the network fits the flipped training labels and its clean-test score falls. This
script trains the `cxr_bench` baseline (resnet18, 64 px, masked BCE, one-cycle) on noisy phantom labels
and prints after every epoch:

- the clean-test macro AUROC (what the benchmark reports);
- how far the flipped training entries are fitted: the mean predicted probability on training entries
  whose clean label is 0 but observed label 1 (false positives), against that on entries that are 0 in
  both; and the mean on entries clean 1 but observed 0 (missed positives), against entries 1 in both.
  Memorisation shows as the flipped entries moving towards their wrong observed label.
"""
import argparse, time
import numpy as np
import torch
from fastai.callback.core import Callback
import fastai.callback.progress  # noqa: F401  (no_bar)
from fastai.torch_core import set_seed

from cxr_noisy_lt.phantom import make_phantom
from cxr_noisy_lt.noise import add_noise
from cxr_noisy_lt.labels import clean_col
from cxr_noisy_lt.data import cxr_dls
from cxr_noisy_lt.learner import cxr_learner, predict_split
from cxr_noisy_lt.metrics import per_class_auc, macro
from cxr_noisy_lt.bench import parse_noise


class EpochProbe(Callback):
    "After each epoch: clean-test mAUC and the mean prediction on flipped / unflipped training entries."
    order = 100
    def __init__(self, frame, classes): self.frame, self.classes, self.rows = frame, classes, []
    def after_epoch(self):
        cols, ccols = list(self.classes), [clean_col(c) for c in self.classes]
        p, _, f = predict_split(self.learn, self.frame, 'test')
        mauc = macro(per_class_auc(f[ccols].to_numpy(float), p))
        p, _, f = predict_split(self.learn, self.frame, 'train')
        y, c = f[cols].to_numpy(float), f[ccols].to_numpy(float)
        m = lambda sel: float(p[sel].mean()) if sel.any() else float('nan')
        self.rows.append(dict(epoch=self.epoch + 1, mauc=mauc, fp=m((c == 0) & (y == 1)), tn=m((c == 0) & (y == 0)),
                              fn=m((c == 1) & (y == 0)), tp=m((c == 1) & (y == 1))))
        r = self.rows[-1]
        print(f"{r['epoch']:5d} {r['mauc']:10.3f}   {r['fp']:.3f} vs {r['tn']:.3f}      {r['fn']:.3f} vs {r['tp']:.3f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--noise', default='symmetric:0.2'); ap.add_argument('--n', type=int, default=5000)
    ap.add_argument('--size', type=int, default=64); ap.add_argument('--epochs', type=int, default=16)
    ap.add_argument('--lr', type=float, default=2e-3); ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--seed', type=int, default=0); ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ph = make_phantom(n=a.n, size=a.size, seed=0, progress=False)
    model, rate = parse_noise(a.noise)
    frame = ph.frame if model is None else add_noise(ph.frame, ph.classes, model=model, rate=rate, seed=a.seed, splits=None)
    set_seed(a.seed, reproducible=True)
    dls = cxr_dls(frame, classes=ph.classes, images=ph.images, bs=a.bs, seed=a.seed)
    probe = EpochProbe(frame, ph.classes)
    learn = cxr_learner(dls, cbs=[probe], metrics=[])
    print(f"resnet18, {a.size}px, n={a.n}, noise {a.noise}, one-cycle {a.epochs} epochs, lr {a.lr}, seed {a.seed}")
    print("epoch  clean mAUC   P(false pos) vs P(true neg)   P(missed pos) vs P(true pos)   (mean predicted probability, training entries)")
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(a.epochs, a.lr)
    best = max(probe.rows, key=lambda r: r['mauc'])
    last = probe.rows[-1]
    print(f"best clean mAUC {best['mauc']:.3f} at epoch {best['epoch']}; last {last['mauc']:.3f} (drop {best['mauc'] - last['mauc']:+.3f}); "
          f"{time.time() - t0:.0f} s")


if __name__ == '__main__':
    main()
