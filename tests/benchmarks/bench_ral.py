"""Step-time overhead of the Robust Asymmetric Loss (and the ASL / focal baselines) over masked BCE, one run.

    python tests/benchmarks/bench_ral.py [--arch resnet18] [--size 64] [--bs 32] [--steps 12] [--rounds 3] [--threads 1]

Same model (same initial weights), same training batches, fastai loop; only the loss function differs.
Prints the median training-step time of each loss and its ratio to BCE (configurations alternate for
`--rounds` rounds, the best median of each is kept), then the loss alone, forward and backward on the
[batch, 14] logits, as a share of the BCE step: the part of the step the loss itself costs.
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
from _timing import StepTimer  # noqa: E402  (this folder is on sys.path when the script runs)

LOSSES = {'bce': MaskedBCEWithLogits, 'ral': lambda: RobustAsymmetricLoss(reduction='mean'),
          'asl': lambda: AsymmetricLoss(reduction='mean'), 'focal': lambda: FocalLossMultiLabel(reduction='mean')}


def run(args, dls, name):
    set_seed(0, reproducible=True)
    timer = StepTimer(args.steps, args.warmup)
    learn = cxr_learner(dls, args.arch, loss_func=LOSSES[name](), cbs=[timer], metrics=[])
    dls.train.rng.seed(0)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    return float(np.median(timer.times[args.warmup:]))


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
    ap.add_argument('--bs', type=int, default=32); ap.add_argument('--steps', type=int, default=12)
    ap.add_argument('--warmup', type=int, default=2); ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = int(args.bs * (args.steps + args.warmup + 1) / 0.7) + 20
    frame, images = toy_cxr(n=n, size=args.size, classes=NIH14, seed=0)
    dls = cxr_dls(frame, NIH14, images=images, bs=args.bs, seed=0)
    times = {m: [] for m in LOSSES}
    for _ in range(args.rounds):
        for m in times: times[m].append(run(args, dls, m))
    best = {m: min(v) for m, v in times.items()}
    alone = {m: loss_alone(m, args.bs) for m in LOSSES}
    print(f"{args.arch}, {args.size}px, batch {args.bs}, {torch.get_num_threads()} thread(s), "
          f"median of {args.steps} steps, best of {args.rounds} rounds")
    for m in LOSSES:
        ratio = '' if m == 'bce' else f"   ratio {best[m] / best['bce']:.3f}" + ('  (target < 1.05)' if m == 'ral' else '')
        print(f"{m:6} step {1e3 * best[m]:8.1f} ms{ratio}")
    for m in LOSSES:
        print(f"{m:6} loss alone (fwd + bwd) {1e3 * alone[m]:7.3f} ms = {100 * alone[m] / best['bce']:.2f}% of the BCE step"
              + ('' if m == 'bce' else f";  {100 * (alone[m] - alone['bce']) / best['bce']:+.2f}% beyond BCE's loss"))


if __name__ == '__main__':
    main()
