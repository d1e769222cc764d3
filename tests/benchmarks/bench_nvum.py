"""Step-time overhead of NVUM over plain BCE, same model and batch, one run.

    python tests/benchmarks/bench_nvum.py [--arch resnet18] [--size 64] [--bs 16] [--n-items 86524]

Prints the median training-step time with BCE and with `NVUMCallback` (fastai loop, same data), their
ratio, and separately the cost of the pieces NVUM adds: the teacher forward, the EMA update, and the
memory work (memory write + mixup targets + regulariser forward/backward) as a share of the BCE step.
"""
import argparse, time
import numpy as np
import torch
import torch.nn.functional as F
import timm
from fastai.callback.core import CancelTrainException
from fastai.data.core import DataLoaders
from fastai.learner import Learner
import fastai.callback.progress  # noqa: F401  (no_bar)

from cxr_noisy_lt.nvum import NVUMCallback, NVUMMemory, masked_mean, nvum_regularizer, nvum_state
from _timing import StepTimer  # noqa: E402  (this folder is on sys.path when the script runs)


class FixedImages(torch.utils.data.Dataset):
    "n_items items that cycle through one fixed batch of images and labels; yields (x, y, idx)"
    n_inp = 1
    def __init__(self, n_items, x, y): self.n, self.x, self.y = n_items, x, y
    def __len__(self): return self.n
    def __getitem__(self, i): return self.x[i % len(self.x)], self.y[i % len(self.y)], i
    @property
    def labels(self): return self.y[torch.arange(self.n) % len(self.y)]



def masked_bce(z, y, *extra):
    return masked_mean(F.binary_cross_entropy_with_logits(z, y.nan_to_num(0.), reduction='none'), y)


def run(args, x, y, nvum):
    torch.manual_seed(0)
    ds = FixedImages(args.n_items, x, y)
    dls = DataLoaders.from_dsets(ds, FixedImages(args.bs, x, y), bs=args.bs, device='cpu', num_workers=0)
    model = timm.create_model(args.arch, pretrained=False, in_chans=1, num_classes=y.shape[1])
    timer = StepTimer(args.steps, args.warmup, stop=CancelTrainException)
    cbs = [timer] + ([NVUMCallback()] if nvum else [])
    learn = Learner(dls, model, loss_func=masked_bce, cbs=cbs, lr=1e-3)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    return float(np.median(timer.times[args.warmup:])), learn


def timeit(f, reps):
    f()
    t = time.perf_counter()
    for _ in range(reps): f()
    return (time.perf_counter() - t) / reps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--arch', default='resnet18'); ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--bs', type=int, default=16); ap.add_argument('--classes', type=int, default=14)
    ap.add_argument('--n-items', type=int, default=86524, help='memory rows (NIH-14 train+val: 86,524)')
    ap.add_argument('--steps', type=int, default=15); ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--rounds', type=int, default=2, help='alternating BCE / NVUM runs; the best median is kept')
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.bs, 1, args.size, args.size, generator=g)
    y = (torch.rand(args.bs, args.classes, generator=g) < 0.2).float()
    y[torch.rand(y.shape, generator=g) < 0.1] = float('nan')

    bce, nv = [], []
    for _ in range(args.rounds):
        bce.append(run(args, x, y, False)[0])
        t, learn = run(args, x, y, True)
        nv.append(t)
    t_bce, t_nvum = min(bce), min(nv)

    # the pieces NVUM adds, timed alone on the same batch
    st = nvum_state(learn.model)
    student, teacher = learn.model, st.teacher
    student.train()
    reps = max(5, args.steps)
    with torch.no_grad(): z_t = teacher(x)
    t_teacher = timeit(lambda: torch.no_grad()(teacher)(x), reps)
    t_ema = timeit(lambda: teacher.update(student), reps)
    mem = NVUMMemory(args.n_items, args.classes, st.memory.prior.numpy())
    z = torch.randn(args.bs, args.classes, requires_grad=True)
    lam_dist = torch.distributions.Beta(torch.tensor(1.), torch.tensor(1.))
    def memory_work():
        idx = torch.randint(0, args.n_items, (args.bs,))
        mem.update(idx, z_t)
        lam = float(lam_dist.sample()); lam = max(lam, 1 - lam)
        q = mem.targets(idx, torch.randperm(args.bs), lam)
        masked_mean(nvum_regularizer(z, q), y).backward()
    t_mem = timeit(memory_work, 200)

    print(f"{args.arch}, {args.size}px, batch {args.bs}, {args.classes} classes, memory {args.n_items} x {args.classes}, "
          f"{torch.get_num_threads()} thread(s), median of {args.steps} steps, best of {args.rounds} rounds")
    print(f"BCE step        {1e3 * t_bce:8.2f} ms")
    print(f"NVUM step       {1e3 * t_nvum:8.2f} ms   ratio NVUM/BCE = {t_nvum / t_bce:.3f}")
    print(f"  teacher fwd   {1e3 * t_teacher:8.2f} ms   ({100 * t_teacher / t_bce:5.1f}% of the BCE step)")
    print(f"  EMA update    {1e3 * t_ema:8.2f} ms   ({100 * t_ema / t_bce:5.1f}%)")
    print(f"  memory work   {1e3 * t_mem:8.3f} ms   ({100 * t_mem / t_bce:5.2f}%)  "
          f"write + mixup targets + regulariser fwd/bwd, beyond the teacher forward (target < 3%)")


if __name__ == '__main__':
    main()
