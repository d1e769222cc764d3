"""Step-time cost of the two-stage method against plain BCE, same model and batch, one run.

    python tests/benchmarks/bench_twostage.py [--arch resnet18] [--size 64] [--bs 64] [--steps 10] [--threads 1]

Prints the median training-step time (fastai loop, from `before_batch` to `after_batch`, so data loading
is not counted) of
  * BCE,
  * stage 1: BCE + `MetricLearningCallback` with the multi-label SupCon loss, and with the triplet loss
    (batch-hard and semi-hard mining),
  * stage 2: `RebalanceStage` (frozen backbone in eval mode, only the classifier trains),
each as a ratio to the BCE step, and the time of the metric term alone (projection head + loss, forward
and backward) on the same batch.
"""
import argparse, time
import numpy as np
import torch

import fastai.callback.progress  # noqa: F401  (no_bar)

from cxr_noisy_lt.data import toy_cxr, cxr_dls
from cxr_noisy_lt.learner import cxr_learner
from cxr_noisy_lt.twostage import MetricLearningCallback, RebalanceStage, ProjectionHead, METRIC_LOSSES
from _timing import StepTimer  # noqa: E402  (this folder is on sys.path when the script runs)



def run(args, dls, cbs):
    torch.manual_seed(0)
    learn = cxr_learner(dls, args.arch, metrics=[])
    timer = StepTimer(args.steps, args.warmup)
    with learn.no_bar(), learn.no_logging(): learn.fit(100, 1e-3, cbs=[timer] + cbs())
    return float(np.median(timer.times[args.warmup:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--arch', default='resnet18'); ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--bs', type=int, default=64); ap.add_argument('--classes', type=int, default=14)
    ap.add_argument('--steps', type=int, default=10); ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--rounds', type=int, default=2, help='rounds over all settings; the best median is kept')
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from cxr_noisy_lt.labels import NIH14
    frame, images = toy_cxr(n=4 * args.bs, size=args.size, classes=NIH14[:args.classes], prevalence=0.1, seed=0,
                            splits=(0.7, 0.1, 0.2))
    frame['patient'] = [f'P{i}' for i in range(len(frame))]
    frame['split'] = 'train'; frame.loc[frame.index[:args.bs], 'split'] = 'valid'   # 3 training batches per epoch
    dls = cxr_dls(frame, NIH14[:args.classes], images=images, bs=args.bs, seed=0, aug=False)
    settings = {
        'BCE': lambda: [],
        'stage 1, SupCon': lambda: [MetricLearningCallback('supcon')],
        'stage 1, triplet (batch-hard)': lambda: [MetricLearningCallback('triplet', mining='hard')],
        'stage 1, triplet (semi-hard)': lambda: [MetricLearningCallback('triplet', mining='semihard')],
        'stage 2 (frozen backbone)': lambda: [RebalanceStage('rarest', seed=0)],
    }
    best = {k: float('inf') for k in settings}
    for _ in range(args.rounds):
        for k, cbs in settings.items(): best[k] = min(best[k], run(args, dls, cbs))

    # the metric term alone: head + loss, forward and backward, on pooled features of this batch size
    learn = cxr_learner(dls, args.arch, metrics=[])
    x, y, _ = dls.one_batch()
    with torch.no_grad(): h = learn.model.forward_head(learn.model.forward_features(x), pre_logits=True)
    h.requires_grad_(True)
    head = ProjectionHead(h.shape[1], 128)
    alone = {}
    for name, fn in METRIC_LOSSES.items():
        def step(): fn(head.embed(h), y).backward()
        step(); t = time.perf_counter()
        for _ in range(20): step()
        alone[name] = (time.perf_counter() - t) / 20

    t_bce = best['BCE']
    print(f"{args.arch}, {args.size}px, batch {args.bs}, {args.classes} classes, {torch.get_num_threads()} thread(s), "
          f"median of {args.steps} steps, best of {args.rounds} rounds")
    for k, v in best.items():
        print(f"{k:32s} {1e3 * v:8.1f} ms   ratio to BCE = {v / t_bce:.3f}")
    for k, v in alone.items():
        print(f"  {k} term alone (head + loss, fwd + bwd) {1e3 * v:7.2f} ms   ({100 * v / t_bce:.1f}% of the BCE step)")


if __name__ == '__main__':
    main()
