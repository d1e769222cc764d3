"""Step-time overhead of the Robust Asymmetric Loss (and the ASL / focal baselines) over masked BCE, one run.

    python tests/benchmarks/bench_ral.py [--arch resnet18] [--size 64] [--bs 32] [--steps 15] [--threads 1]

One fastai fit in which the loss function changes at every training step, in turn BCE, RAL, ASL, focal:
the same model, the same batches, and whatever else runs on the machine shared evenly among the losses.
Prints the median step time (before_batch to after_batch) of each loss over `--steps` steps and its ratio
to BCE, then the loss alone, forward and backward on the [batch, 14] logits, as a share of the BCE step.
"""
import argparse, time
import numpy as np
import torch

from fastai.torch_core import set_seed
import fastai.callback.progress  # noqa: F401  (no_bar)

from cxr_noisy_lt.data import toy_cxr, cxr_dls
from cxr_noisy_lt.learner import cxr_learner, MaskedBCEWithLogits
from cxr_noisy_lt.labels import NIH14
from cxr_noisy_lt.ral import RobustAsymmetricLoss, AsymmetricLoss, FocalLossMultiLabel
from fastai.callback.core import Callback, CancelFitException

LOSSES = {'bce': MaskedBCEWithLogits, 'ral': lambda: RobustAsymmetricLoss(reduction='mean'),
          'asl': lambda: AsymmetricLoss(reduction='mean'), 'focal': lambda: FocalLossMultiLabel(reduction='mean')}


class RotateLoss(Callback):
    "Use the next loss of `LOSSES` at every training step and time the step under that loss's name."
    order = -90
    def __init__(self, steps, warmup):
        self.names, self.fns = list(LOSSES), [f() for f in LOSSES.values()]
        self.steps, self.warmup, self.i, self.times = steps, warmup, 0, {k: [] for k in LOSSES}
    def before_batch(self):
        if not self.training: return
        self.k = self.i % len(self.names); self.learn.loss_func = self.fns[self.k]; self.t = time.perf_counter()
    def after_batch(self):
        if not self.training: return
        if self.i >= self.warmup * len(self.names): self.times[self.names[self.k]].append(time.perf_counter() - self.t)
        self.i += 1
        if self.i >= (self.steps + self.warmup) * len(self.names): raise CancelFitException


def run(args, dls):
    set_seed(0, reproducible=True)
    cb = RotateLoss(args.steps, args.warmup)
    learn = cxr_learner(dls, args.arch, cbs=[cb], metrics=[])
    with learn.no_bar(), learn.no_logging(): learn.fit(100, 1e-3)
    return {k: float(np.median(v)) for k, v in cb.times.items()}


def loss_alone(name, bs, reps=200):
    "Median seconds of the loss's forward + backward on [bs, 14] logits with 20% positives and some NaN labels."
    torch.manual_seed(0)
    z = torch.randn(bs, len(NIH14), requires_grad=True)
    y = (torch.rand(bs, len(NIH14)) < 0.2).float()
    y[torch.rand_like(y) < 0.05] = float('nan')
    lf, ts = LOSSES[name](), []
    for _ in range(reps):
        t = time.perf_counter(); lf(z, y).backward(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--arch', default='resnet18'); ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--bs', type=int, default=32); ap.add_argument('--steps', type=int, default=15)
    ap.add_argument('--warmup', type=int, default=2); ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = int(args.bs * 8 / 0.7) + 20
    frame, images = toy_cxr(n=n, size=args.size, classes=NIH14, seed=0)
    dls = cxr_dls(frame, NIH14, images=images, bs=args.bs, seed=0)
    best = run(args, dls)
    alone = {m: loss_alone(m, args.bs) for m in LOSSES}
    print(f"{args.arch}, {args.size}px, batch {args.bs}, {torch.get_num_threads()} thread(s), "
          f"losses in turn at every step, median of {args.steps} steps each")
    for m in LOSSES:
        ratio = '' if m == 'bce' else f"   ratio {best[m] / best['bce']:.3f}" + ('  (target < 1.05)' if m == 'ral' else '')
        print(f"{m:6} step {1e3 * best[m]:8.1f} ms{ratio}")
    for m in LOSSES:
        print(f"{m:6} loss alone (fwd + bwd) {1e3 * alone[m]:7.3f} ms = {100 * alone[m] / best['bce']:.2f}% of the BCE step"
              + ('' if m == 'bce' else f";  {100 * (alone[m] - alone['bce']) / best['bce']:+.2f}% beyond BCE's loss"))


if __name__ == '__main__':
    main()
