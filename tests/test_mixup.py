"Attention mixup / contrastive callbacks: checkpoints, export, hooks, several timm architectures."
import copy
import math
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import fastcore.test as fct
import fastai.callback.progress  # noqa: F401  (learn.no_bar)
from fastai.callback.core import Callback, CancelFitException
from fastai.vision.augment import RandomErasing

from cxr_noisy_lt.data import toy_cxr, cxr_dls
from cxr_noisy_lt.labels import NIH14
from cxr_noisy_lt.learner import cxr_learner, predict_split, MaskedBCEWithLogits
from cxr_noisy_lt.mixup import (AttentionMixupCallback, ContrastiveCallback, HeadInput, aux_modules, classifier_of,
                                strip_aux, contrastive_pretrain, GroupAttention, group_index, mix_features, mix_labels,
                                group_mix_loss, joint_contrastive_attmix_learner, strong_view_tfms, augmented_view)

torch.set_num_threads(1)
CLS = NIH14[:4]


class Net(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.Linear(6, c)
    def forward(self, x): return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.fixture(scope='module')
def data():
    return toy_cxr(n=96, size=16, seed=0)


def learner(data, cbs, path=None, seed=0, arch=None):
    frame, images = data
    dls = cxr_dls(frame, CLS, images, bs=8, seed=0)
    torch.manual_seed(seed)
    kw = {} if path is None else dict(path=path)
    return cxr_learner(dls, arch=arch if arch is not None else Net(), cbs=cbs, metrics=[], **kw)


def fit(learn, n=1, **kw):
    with learn.no_bar(), learn.no_logging(): learn.fit(n, 1e-2, **kw)


def test_checkpoint_round_trip(data, tmp_path):
    learn = learner(data, [AttentionMixupCallback(hidden=8), ContrastiveCallback(out_dim=8)], path=tmp_path)
    fit(learn)
    learn.save('attmix')
    new = learner(data, [AttentionMixupCallback(hidden=8), ContrastiveCallback(out_dim=8)], path=tmp_path, seed=1)
    a0 = copy.deepcopy(new.attention_mixup.attention.state_dict())
    new.load('attmix')
    for k, v in learn.model.state_dict().items(): fct.test_eq(new.model.state_dict()[k], v)
    assert any((a0[k] != v).any() for k, v in new.attention_mixup.attention.state_dict().items())
    p1, p2 = predict_split(learn, split='test')[0], predict_split(new, split='test')[0]
    fct.test_close(p1, p2, eps=1e-6)
    # a plain learner loads the checkpoint with strict=False and predicts the same
    plain = learner(data, None, path=tmp_path, seed=2)
    plain.load('attmix', strict=False, with_opt=False)
    fct.test_close(predict_split(plain, split='test')[0], p1, eps=1e-6)


def test_pickle_and_hooks(data, tmp_path):
    learn = learner(data, AttentionMixupCallback(hidden=8), path=tmp_path)
    fit(learn)
    head = classifier_of(learn.model)
    fct.test_eq(len(head._forward_pre_hooks), 0)                  # removed after fit
    fit(learn); fit(learn)
    fct.test_eq(len(head._forward_pre_hooks), 0)
    torch.save(learn.model, tmp_path / 'model.pt')                # a whole-model pickle holds no hook
    back = torch.load(tmp_path / 'model.pt', weights_only=False)
    x = torch.randn(3, 1, 16, 16)
    learn.model.eval(); back.eval()
    with torch.no_grad(): fct.test_close(back(x), learn.model(x), eps=1e-6)
    stripped = strip_aux(learn.model)
    assert stripped is not None and aux_modules(learn.model) is None


def test_params_train_even_when_opt_is_made_before_the_callback_joins(data):
    learn = learner(data, None)
    learn.create_opt()
    cb = AttentionMixupCallback(hidden=8)
    learn.add_cb(cb)
    ids = {id(p) for pg in learn.opt.param_lists for p in pg}
    assert all(id(p) in ids for p in cb.attention.parameters())
    w0 = cb.attention.group.weight.detach().clone()
    fit(learn)
    assert (cb.attention.group.weight != w0).any()
    # the same callback fitted twice does not add the parameters twice
    fit(learn)
    ps = [id(p) for pg in learn.opt.param_lists for p in pg]
    fct.test_eq(len(ps), len(set(ps)))


@pytest.mark.parametrize('arch', ['resnet18', 'efficientnet_b0', 'convnext_atto'])
def test_timm_pooled_features(arch):
    torch.manual_seed(0)
    m = timm.create_model(arch, in_chans=1, num_classes=4).eval()
    head = classifier_of(m)
    assert head is m.get_classifier()
    hk = HeadInput(head); hk.arm()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        z = m(x)
        f = m.forward_head(m.forward_features(x), pre_logits=True)
    fct.test_close(hk.take(), f, eps=1e-6)
    fct.test_close(head(f), z, eps=1e-5)
    hk.remove()


def test_pretrain_then_mixup_with_timm(data):
    learn = learner(data, None, arch='resnet18')
    fc0 = learn.model.fc.weight.detach().clone()
    conv0 = learn.model.conv1.weight.detach().clone()
    with learn.no_bar(), learn.no_logging(): contrastive_pretrain(learn, 1, 1e-3, loss='supcon')
    fct.test_eq(torch.equal(learn.model.fc.weight, fc0), True)
    assert not torch.equal(learn.model.conv1.weight, conv0)
    cb = AttentionMixupCallback()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-3, cbs=cb, reset_opt=True)
    assert not torch.equal(learn.model.fc.weight, fc0)
    probs = predict_split(learn, split='test')[0]
    assert np.isfinite(probs).all()


# --- how the labels are mixed -------------------------------------------------------------------------------------

NAN = float('nan')
LN = math.log
SIG = lambda t: 1 / (1 + math.exp(-t))


def test_label_mix_formulas_by_hand():
    # two groups (0, 2) and (1, 3); item 3's second label unknown; mixed logits and weights given
    y = torch.tensor([[1., 0.], [1., 1.], [0., 1.], [1., NAN]])
    groups = group_index(4, 2)
    w = torch.tensor([[SIG(3), SIG(-3)], [SIG(-1), SIG(1)]])
    z = torch.tensor([[0., LN(3)], [-LN(3), 0.]])
    bce = MaskedBCEWithLogits()
    # 'mean': (1/2) [masked BCE vs the first members' labels (4 known) + vs the second members' labels (3 known)]
    first = (LN(2) + LN(4) + LN(4) + LN(2)) / 4
    second = (LN(2) + (LN(4) - LN(3)) + LN(4)) / 3
    fct.test_close(group_mix_loss(bce, z, y, w, groups, 'mean').item(), (first + second) / 2, eps=1e-6)
    # 'attention': BCE vs y_mix = ((s(3), s(-3)), (1, NaN)), 3 known
    ym = mix_labels(y, w, groups)
    fct.test_close(ym[0], torch.tensor([SIG(3), SIG(-3)]), eps=1e-6)
    assert ym[1, 0].item() == 1. and math.isnan(ym[1, 1].item())
    want = (LN(2) + (LN(4) - SIG(-3) * LN(3)) + LN(4)) / 3
    fct.test_close(group_mix_loss(bce, z, y, w, groups, 'attention').item(), want, eps=1e-6)
    # the weights enter 'mean' only through the mixed logits, 'attention' also through the target
    fct.test_close(group_mix_loss(bce, z, y, w.flip(1), groups, 'mean').item(), (first + second) / 2, eps=1e-6)
    fct.test_close(group_mix_loss(bce, z, y, w.flip(1), groups, 'attention').item(),
                   (LN(2) + (LN(4) - SIG(3) * LN(3)) + LN(4)) / 3, eps=1e-6)
    # a member whose labels are all unknown adds zero to 'mean' and makes every 'attention' target unknown
    y2 = y.clone(); y2[2:] = NAN
    fct.test_close(group_mix_loss(bce, z, y2, w, groups, 'mean').item(), first / 2, eps=1e-6)
    fct.test_eq(group_mix_loss(bce, z, y2, w, groups, 'attention').item(), 0.)
    with pytest.raises(ValueError, match="'max'"): group_mix_loss(bce, z, y, w, groups, 'max')
    with pytest.raises(ValueError, match="'max'"): AttentionMixupCallback(label_mix='max')


@pytest.mark.parametrize('label_mix', ['mean', 'attention'])
def test_callback_uses_the_chosen_label_mix(data, label_mix):
    "with lr=0 nothing moves, so the last step's mixed term can be recomputed from the final weights"
    class Rec(Callback):
        order = 50
        def after_loss(self):
            if self.training: self.xr, self.yr = self.learn.xb[0].clone(), self.learn.yb[0].clone()
    rec, amc = Rec(), AttentionMixupCallback(hidden=8, label_mix=label_mix)
    learn = learner(data, [amc, rec])
    nn.init.normal_(learn.attention_mixup.attention.member.weight)     # weights away from 1/2
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 0.)
    m, att = learn.model.train(), amc.attention
    with torch.no_grad():
        f = torch.relu(m.bn(m.conv(rec.xr))).mean((2, 3))
        groups = group_index(len(f), 2)
        w = att(f[groups])
        z = m.fc(mix_features(f, w, groups))
        bce = MaskedBCEWithLogits()
        if label_mix == 'mean': want = (bce(z, rec.yr[groups[:, 0]]) + bce(z, rec.yr[groups[:, 1]])) / 2
        else: want = bce(z, (w[:, :1] * rec.yr[groups[:, 0]] + w[:, 1:] * rec.yr[groups[:, 1]]))
    assert (w[:, 0] - 0.5).abs().max() > 0.01
    fct.test_close(amc.last_losses['mixed'].item(), want.item(), eps=1e-5)


def findings_weight(label_mix, seed=0, steps=300, d=32, n_cls=14, sigma=1.5, n_pairs=64):
    """Mean attention weight on the member with findings in pairs (findings, none), clean labels: the attention is
    trained alone on fixed features f = sum_c y_c mu_c + noise with a frozen, fitted linear classifier."""
    gen = torch.Generator().manual_seed(seed)
    prev = torch.logspace(math.log10(0.25), -2, n_cls)                 # prevalence 25% ... 1%
    mu = 2 * F.normalize(torch.randn(n_cls, d, generator=gen), dim=1)
    y = (torch.rand(20000, n_cls, generator=gen) < prev).float()
    f = y @ mu + sigma * torch.randn(20000, d, generator=gen)
    torch.manual_seed(seed)
    head, bce = nn.Linear(d, n_cls), MaskedBCEWithLogits()
    opt = torch.optim.Adam(head.parameters(), 0.05)
    for _ in range(300):
        opt.zero_grad(); bce(head(f), y).backward(); opt.step()
    head.requires_grad_(False)
    has = y.sum(1) > 0
    pos, neg = (f[has], y[has]), (f[~has], y[~has])

    def pairs(n):
        i, j = torch.randint(len(pos[0]), (n,), generator=gen), torch.randint(len(neg[0]), (n,), generator=gen)
        first = (torch.rand(n, generator=gen) < 0.5)[:, None]             # the member with findings at position 0?
        a = [torch.where(first, p[i], q[j]) for p, q in zip(pos, neg)]
        b = [torch.where(first, q[j], p[i]) for p, q in zip(pos, neg)]
        return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), first[:, 0]

    att = GroupAttention(d, 2, hidden=32)
    opt = torch.optim.Adam(att.parameters(), 1e-2)
    groups = group_index(2 * n_pairs, 2)
    for _ in range(steps):
        fb, yb, _ = pairs(n_pairs)
        w = att(fb[groups])
        loss = group_mix_loss(bce, head(mix_features(fb, w, groups)), yb, w, groups, label_mix)
        opt.zero_grad(); loss.backward(); opt.step()
    fb, yb, first = pairs(4000)
    with torch.no_grad(): w = att(fb[group_index(8000, 2)])
    return torch.where(first, w[:, 0], w[:, 1]).mean().item()


@pytest.mark.slow
def test_default_attention_does_not_favour_the_member_without_findings():
    "on clean labels, the default rule must not learn to move the weight off images with findings"
    w = findings_weight(AttentionMixupCallback().label_mix)
    assert w >= 0.45, f"mean weight on the member with findings {w:.3f} < 0.45"


@pytest.mark.slow
def test_attention_label_mix_favours_the_member_without_findings():
    "the same check fails for targets mixed with the attention weights: the attention erases positives"
    w = findings_weight('attention')
    assert w < 0.4, w


# --- contrastive loss joined to supervised training ---------------------------------------------------------------

def test_strong_view(data):
    frame, images = data
    dls = cxr_dls(frame, CLS, images, bs=8, seed=0, aug=False)
    x, y, idx = dls.one_batch()
    tf = strong_view_tfms()
    assert isinstance(tf[-1], RandomErasing) and not any(type(t).__name__ == 'Flip' for t in tf)
    xs = augmented_view(dls.train, idx, tfms=tf)
    fct.test_eq((type(xs), xs.shape), (type(x), x.shape))
    assert (xs - x).abs().mean() > 0.3                         # x is the plain (normalised) image here
    # normalised as the loader normalises: no augmentation at all gives the loader's batch back
    fct.test_close(augmented_view(dls.train, idx, tfms=[]), x, eps=1e-6)


def test_joint_contrastive_attmix_trains_one_batch(data):
    frame, images = data
    dls = cxr_dls(frame, CLS, images, bs=16, seed=0)

    class OneStep(Callback):
        order = 60
        def after_loss(self): self.total, self.n_in = self.learn.loss_grad.detach().clone(), len(self.learn.xb[0])
        def after_backward(self):
            self.grads = {n: p.grad.detach().clone() for n, p in self.learn.model.named_parameters() if p.grad is not None}
            raise CancelFitException()

    torch.manual_seed(0)
    step = OneStep()
    learn = joint_contrastive_attmix_learner(dls, Net(), cbs=step, metrics=[], contrastive_weight=0.2, temperature=0.3)
    am, cc = learn.attention_mixup, learn.contrastive
    fct.test_eq((am.label_mix, cc.weight, cc.temperature, cc.loss), ('mean', 0.2, 0.3, 'simclr'))
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    fct.test_eq(step.n_in, 32)                                   # view 1 and the strong view 2
    assert torch.isfinite(step.total)
    fct.test_close(step.total.item(), 1.5 * am.last_losses['mixed'].item() + 0.5 * am.last_losses['plain'].item()
                   + 0.2 * cc.last_loss.item(), eps=1e-5)
    for name in ['train_aux.projection.net.0.weight', 'train_aux.projection.net.2.weight',
                 'train_aux.attention.member.weight', 'train_aux.attention.group.weight', 'fc.weight', 'conv.weight']:
        g = step.grads.get(name)
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    assert isinstance(learn.loss_func, MaskedBCEWithLogits)       # restored after the cancelled fit
