"""Step-time overhead of attention mixup and of the contrastive auxiliary loss over plain BCE, one run.

    python tests/benchmarks/bench_mixup.py [--arch resnet18] [--size 64] [--bs 32] [--steps 12] [--rounds 3] [--threads 1]

Same model (same initial weights), same training batches (same loader seed, same augmentation seed), fastai
loop: prints the median training-step time (before_batch to after_batch, so the contrastive callback's
second view, read and augmented inside the step, is counted) with BCE, with `AttentionMixupCallback`, and
with `ContrastiveCallback` (NT-Xent as an auxiliary loss), and their ratios to BCE. Configurations run
alternately for `--rounds` rounds; the best median of each is kept, which damps the noise of a shared machine.
"""
import argparse, time
import numpy as np
import torch

from fastai.torch_core import set_seed
import fastai.callback.progress  # noqa: F401  (no_bar)

from cxr_noisy_lt.data import toy_cxr, cxr_dls
from cxr_noisy_lt.learner import cxr_learner, cxr_model, MaskedBCEWithLogits
from cxr_noisy_lt.labels import NIH14
from cxr_noisy_lt.mixup import AttentionMixupCallback, ContrastiveCallback, GroupAttention, classifier_of, group_index, mix_groups
from _timing import StepTimer  # noqa: E402  (this folder is on sys.path when the script runs)



def run(args, dls, method):
    set_seed(0, reproducible=True)
    cbs = {'bce': [], 'attmix': [AttentionMixupCallback()],
           'contrastive': [ContrastiveCallback(weight=0.1)]}[method]
    timer = StepTimer(args.steps, args.warmup)
    learn = cxr_learner(dls, args.arch, cbs=[timer] + cbs, metrics=[])
    dls.train.rng.seed(0)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    return float(np.median(timer.times[args.warmup:]))


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
    times = {m: [] for m in ('bce', 'attmix', 'contrastive')}
    for _ in range(args.rounds):
        for m in times: times[m].append(run(args, dls, m))
    best = {m: min(v) for m, v in times.items()}

    # the work attention mixup adds, timed alone: attention, mixing, classifier on the mixed features, fwd + bwd
    torch.manual_seed(0)
    f = torch.randn(args.bs, classifier_of(cxr_model(args.arch, len(NIH14))).in_features, requires_grad=True)
    y = (torch.rand(args.bs, len(NIH14)) < 0.2).float()
    att, head = GroupAttention(f.shape[1]), torch.nn.Linear(f.shape[1], len(NIH14))
    groups = group_index(args.bs, 2)
    def extra():
        fm, ym = mix_groups(f, y, att(f[groups]), groups)
        MaskedBCEWithLogits()(head(fm), ym).backward()
    extra()
    t = time.perf_counter()
    for _ in range(100): extra()
    t_extra = (time.perf_counter() - t) / 100
    print(f"{args.arch}, {args.size}px, batch {args.bs}, {torch.get_num_threads()} thread(s), "
          f"median of {args.steps} steps, best of {args.rounds} rounds")
    print(f"BCE step                 {1e3 * best['bce']:8.1f} ms")
    print(f"attention mixup step     {1e3 * best['attmix']:8.1f} ms   ratio {best['attmix'] / best['bce']:.3f}  (target < 1.15)")
    print(f"  mixup work alone       {1e3 * t_extra:8.2f} ms   ({100 * t_extra / best['bce']:.2f}% of the BCE step: "
          "attention, mixing, classifier on the mixed features, forward and backward)")
    print(f"NT-Xent auxiliary step   {1e3 * best['contrastive']:8.1f} ms   ratio {best['contrastive'] / best['bce']:.3f}  "
          "(two views: about twice the forward/backward work)")


if __name__ == '__main__':
    main()
