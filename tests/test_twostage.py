"The two-stage method through the benchmark's run_one, and a checkpoint round trip with the projection head."
import numpy as np
import torch
import fastcore.test as fct
from cxr_noisy_lt.bench import get_method, run_one
from cxr_noisy_lt.data import toy_cxr, cxr_dls
from cxr_noisy_lt.learner import cxr_learner
from cxr_noisy_lt.twostage import MetricLearningCallback, RebalanceStage, HEAD_KEY, remove_head

CLASSES = ['Atelectasis', 'Cardiomegaly', 'Effusion', 'Infiltration']


def test_run_one_twostage():
    torch.set_num_threads(1)
    frame, images = toy_cxr(n=120, size=16, classes=CLASSES, seed=0)
    m = get_method('twostage')
    out = run_one(m, frame, images, CLASSES, epochs=2, lr=1e-2, bs=16, arch='test_resnet', seed=0)
    fct.test_eq(set(out.probs), {(k, s) for k in ('twostage', 'twostage/stage1') for s in ('best', 'last', 'clean_best')})
    probs = out.probs[('twostage', 'last')]
    fct.test_eq(probs.shape, ((frame.split == 'test').sum(), 4))
    fct.test_eq(out.curves['stage'].tolist(), ['stage1', 'stage1', 'stage2'])          # split_epochs(2) == (2, 1)
    assert np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()
    # same seed, same numbers: the balanced loader of stage 2 is seeded from the training loader
    probs2 = run_one(m, frame, images, CLASSES, epochs=2, lr=1e-2, bs=16, arch='test_resnet', seed=0).probs[('twostage', 'last')]
    fct.test_close(probs, probs2, eps=1e-5)


def test_checkpoint_with_head(tmp_path):
    torch.set_num_threads(1)
    frame, images = toy_cxr(n=96, size=16, classes=CLASSES, seed=1)
    dls = cxr_dls(frame, CLASSES, images=images, bs=16, seed=0, aug=False)
    torch.manual_seed(0)
    learn = cxr_learner(dls, 'test_resnet', metrics=[], path=tmp_path, cbs=MetricLearningCallback('supcon'))
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-2)
        learn.fit(1, 1e-2, cbs=RebalanceStage('repeat', seed=0))
    learn.save('ts')
    # a learner with the callback (head attached when it joins) loads the checkpoint strictly
    learn2 = cxr_learner(dls, 'test_resnet', metrics=[], path=tmp_path, cbs=MetricLearningCallback('supcon'))
    learn2.load('ts')
    for (k, a), b in zip(learn.model.state_dict().items(), learn2.model.state_dict().values()):
        fct.test_eq(a, b)
    # without the head, the plain model has the timm state dict again
    remove_head(learn2.model)
    plain = cxr_learner(dls, 'test_resnet', metrics=[]).model
    fct.test_eq(set(learn2.model.state_dict()), set(plain.state_dict()))
    assert not any(k.startswith(HEAD_KEY) for k in plain.state_dict())


def test_resume_after_load(tmp_path):
    "After learn.load (optimiser state restored as a plain dict) both stages can still be added and run."
    torch.set_num_threads(1)
    frame, images = toy_cxr(n=96, size=16, classes=CLASSES, seed=2)
    dls = cxr_dls(frame, CLASSES, images=images, bs=16, seed=0, aug=False)
    torch.manual_seed(0)
    learn = cxr_learner(dls, 'test_resnet', metrics=[], path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    learn.save('bce')                                   # model + optimiser state
    learn2 = cxr_learner(dls, 'test_resnet', metrics=[], path=tmp_path)
    learn2.load('bce')
    assert learn2.opt is not None
    with learn2.no_bar(), learn2.no_logging():
        learn2.fit_one_cycle(1, 1e-2, cbs=MetricLearningCallback('triplet', mining='semihard'))
        head = learn2.model._modules[HEAD_KEY]
        assert all(id(p) in {id(q) for pg in learn2.opt.param_lists for q in pg} for p in head.parameters())
        learn2.fit_one_cycle(1, 1e-2, cbs=RebalanceStage('rarest', reweight=True, seed=0))
    assert all(torch.isfinite(p).all() for p in learn2.model.parameters())


# --- two views: every anchor has a positive -------------------------------------------------------------------------

from cxr_noisy_lt.twostage import (multilabel_supcon_loss, multilabel_triplet_loss, view_pairs, anchor_positive_counts,
                                   anchor_positive_share, tail_classes)
import math


def _loop_supcon(E, Y, T, views):
    "Multi-label SupCon written out anchor by anchor: anchor a is a view of image a % B; `Y` is a list of rows (None = unknown)."
    B = len(Y)
    def with_none(r):
        return list(r) + [0 if any(v == 1 for v in r) else (1 if all(v == 0 for v in r) else None)]
    Yn = [with_none(r) for r in Y]
    def jaccard(i, j):
        both = [(u, v) for u, v in zip(Yn[i], Yn[j]) if u is not None and v is not None]
        shared, union = sum(u == 1 and v == 1 for u, v in both), sum(u == 1 or v == 1 for u, v in both)
        return shared / union if shared else 0.
    Z = [[x / math.sqrt(sum(t * t for t in e)) for x in e] for e in E]
    n, terms = len(Z), []
    for a in range(n):
        w = [0. if b == a else (1. if a % B == b % B else jaccard(a % B, b % B)) for b in range(n)]
        if sum(w) == 0: continue
        s = [sum(p * q for p, q in zip(Z[a], Z[b])) / T for b in range(n)]
        lse = math.log(sum(math.exp(s[b]) for b in range(n) if b != a))
        terms.append(-sum(w[b] * (s[b] - lse) for b in range(n) if b != a) / sum(w))
    return sum(terms) / len(terms)


def test_two_view_supcon_by_hand():
    "Two images sharing no label: with one view no anchor has a positive (loss 0); with two, each anchor's other view is its positive."
    ang = torch.tensor([0., 180., 60., 90.], dtype=torch.float64) * math.pi / 180    # views: image 0 at 0 and 60, image 1 at 180 and 90 degrees
    Z = torch.stack([ang.cos(), ang.sin()], 1)
    Y = torch.tensor([[1., 0], [0, 1]])
    c = lambda d: math.cos(math.radians(d)); e = lambda d: math.exp(c(d))
    terms = [-(c(60) - math.log(e(180) + e(60) + e(90))), -(c(90) - math.log(e(180) + e(120) + e(90))),
             -(c(60) - math.log(e(60) + e(120) + e(30))), -(c(90) - math.log(e(90) + e(90) + e(30)))]
    fct.test_close(multilabel_supcon_loss(Z, Y, temperature=1.0, views=2).item(), sum(terms) / 4, eps=1e-12)
    fct.test_eq(multilabel_supcon_loss(Z[:2], Y, temperature=1.0, views=1).item(), 0.)


def test_two_view_supcon_matches_loop():
    "Random embeddings and labels with unknowns: the two-view loss equals the anchor-by-anchor loop (float64), for two temperatures."
    g = torch.Generator().manual_seed(0)
    nan = float('nan')
    Y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, nan], [0, 0, 0], [0, nan, 0], [0, 0, 1]], dtype=torch.float64)
    Yl = [[None if math.isnan(v) else int(v) for v in r] for r in Y.tolist()]
    E = torch.randn(12, 4, generator=g, dtype=torch.float64)
    for T in (0.1, 0.5):
        fct.test_close(multilabel_supcon_loss(E, Y, T, views=2).item(), _loop_supcon(E.tolist(), Yl, T, 2), eps=1e-9)
        fct.test_close(multilabel_supcon_loss(E[:6], Y, T).item(), _loop_supcon(E[:6].tolist(), Yl, T, 1), eps=1e-9)
    # every anchor has a positive with two views, not with one (image 3 is the only normal image, image 4's "none" is unknown)
    assert view_pairs(Y, 2)[0].any(1).all()
    fct.test_eq(view_pairs(Y, 1)[0].any(1).tolist(), [True, True, True, False, False, False])
    fct.test_fail(lambda: multilabel_supcon_loss(E[:6], Y, views=2), contains='6 embeddings for 2 view(s) of 6 images')


def test_two_view_triplet_other_view_is_positive():
    "A single image per class: with two views the other view is the only positive, so batch-hard uses it."
    z = torch.tensor([[1., 0], [0, 1], [0.8, 0.6], [0.6, 0.8]])     # views of image 0: rows 0, 2; of image 1: rows 1, 3
    Y = torch.tensor([[1., 0], [0, 1]])
    d = lambda i, j: (z[i] - z[j]).norm().item()
    expected = sum(max(0., d(a, (a + 2) % 4) - min(d(a, b) for b in range(4) if b % 2 != a % 2) + 0.2) for a in range(4)) / 4
    fct.test_close(multilabel_triplet_loss(z, Y, margin=0.2, views=2).item(), expected, eps=1e-6)
    fct.test_eq(multilabel_triplet_loss(z[:2], Y).item(), 0.)        # one view: no positive, no triplet


def test_anchor_positive_share_exact():
    nan = float('nan')
    Y = torch.tensor([[1, 0, 0, 0], [1, 1, nan, 0], [0, nan, 0, 0], [1, 0, 1, 0]])
    a, p = anchor_positive_counts(Y)
    fct.test_eq((a.tolist(), p.tolist()), ([3, 1, 1, 0], [3, 0, 0, 0]))
    s1, s2 = anchor_positive_share(Y), anchor_positive_share(Y, views=2)
    fct.test_eq(s1[:3].tolist(), [1., 0., 0.]); fct.test_eq(s2[:3].tolist(), [1., 1., 1.])
    assert math.isnan(s1[3]) and math.isnan(s2[3])
    fct.test_eq(anchor_positive_share(Y, [False, True, True, False]).tolist(), [0., 0.])
    fct.test_eq(anchor_positive_share(Y, [0, 2], views=2).tolist(), [1., 1.])
    # against the definition, on random batches: an anchor positive for c has another anchor positive for c
    g = np.random.default_rng(0)
    for _ in range(20):
        y = torch.from_numpy((g.random((16, 5)) < [0.5, 0.1, 0.05, 0.02, 0.]).astype(np.float32))
        for views in (1, 2):
            yy = y.repeat(views, 1)
            for cl in range(5):
                pa = np.flatnonzero(yy[:, cl].numpy() == 1)
                want = np.mean([len(pa) > 1 for _ in pa]) if len(pa) else float('nan')
                got = anchor_positive_share(y, views=views)[cl].item()
                assert (math.isnan(want) and math.isnan(got)) or want == got
    y = np.zeros((200, 3)); y[:50, 0] = 1; y[:3, 1] = 1; y[:4, 2] = 1           # fewer than 4 positives: tail
    fct.test_eq(tail_classes(y).tolist(), [1])


def test_one_batch_two_views_gradient():
    "One training step with the default (two views): the model sees 2B images, the loss B predictions, the head gets gradient."
    from fastai.callback.core import Callback, CancelFitException
    torch.set_num_threads(1)
    frame, images = toy_cxr(n=96, size=16, classes=CLASSES, seed=3)
    dls = cxr_dls(frame, CLASSES, images=images, bs=16, seed=0)           # with augmentation

    class Step(Callback):
        order = 5
        def after_pred(self):
            if self.training: self.inp, self.n_pred, self.targ = self.learn.xb[0].detach(), len(self.learn.pred), self.learn.yb[0]
        def after_backward(self):
            self.grads = {k: p.grad for k, p in self.learn.model.named_parameters()}
            raise CancelFitException()

    torch.manual_seed(0)
    step, ml = Step(), MetricLearningCallback('supcon')
    learn = cxr_learner(dls, 'test_resnet', metrics=[], cbs=[ml, step])
    embs = []
    learn.model._modules[HEAD_KEY].net.register_forward_hook(lambda m, i, o: embs.append(torch.nn.functional.normalize(o.detach(), dim=1)))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    B = len(step.targ)
    fct.test_eq(ml.views, 2); fct.test_eq(len(step.inp), 2 * B); fct.test_eq(step.n_pred, B)
    assert not torch.equal(step.inp[:B], step.inp[B:])                       # a fresh augmentation, not a copy
    fct.test_eq(embs[0].shape, (2 * B, 128))
    fct.test_close(ml.last_metric, multilabel_supcon_loss(embs[0], step.targ, views=2), eps=1e-6)
    head = {k: g for k, g in step.grads.items() if k.startswith(HEAD_KEY + '.')}
    assert head and all(g is not None and g.abs().sum() > 0 for g in head.values())
    assert all(torch.isfinite(g).all() for g in step.grads.values() if g is not None)
