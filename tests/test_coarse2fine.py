"Coarse-to-fine: benchmark registry, clean-up after a failing stage 2, phantom look-up errors."
import numpy as np
import pandas as pd
import pytest
import torch
import fastcore.test as fct
from fastcore.basics import noop
from fastai.callback.progress import ProgressCallback
from cxr_noisy_lt.data import toy_cxr, cxr_dls
from cxr_noisy_lt.learner import cxr_learner, MaskedBCEWithLogits
from cxr_noisy_lt.labels import NIH14
from cxr_noisy_lt import coarse2fine as c2f
from cxr_noisy_lt import annotations

torch.set_num_threads(1)


def _learner(n=160):
    frame, images = toy_cxr(n=n, size=32, seed=0)
    dls = cxr_dls(frame, NIH14[:4], images, bs=16, seed=0)
    learn = cxr_learner(dls, 'resnet18', metrics=[])
    learn.remove_cb(ProgressCallback); learn.logger = noop
    return learn


def _maps(learn):
    "One channel per training image: a box over the top-left quarter for every third image."
    m = torch.zeros(len(learn.dls.train_ds), 1, 8, 8)
    m[::3, 0, :4, :4] = 1
    return m


def test_bench_registry():
    from cxr_noisy_lt.bench import get_method, available_methods
    assert 'coarse2fine' in available_methods()
    m = get_method('coarse2fine')
    fct.test_eq(m.name, 'coarse2fine')
    assert m.fit is not None and m.eval_model is None


def test_restored_after_failing_stage2():
    learn = _learner()
    loss0, train0 = learn.loss_func, learn.dls.train
    calls = []

    class Boom(MaskedBCEWithLogits):
        def forward(self, logits, target, *extra):
            calls.append(1)
            if len(calls) == 3: raise RuntimeError('boom')
            return super().forward(logits, target, *extra)

    with pytest.raises(RuntimeError, match='boom'):
        c2f.fit_coarse_to_fine(learn, 0, 2, 1e-3, annotations=_maps(learn), frac=None, loss_func=Boom())
    fct.test_eq(learn.loss_func is loss0, True)
    fct.test_eq(learn.dls.train is train0, True)
    assert isinstance(learn.model, c2f.CVDistillNet)
    assert all(p.requires_grad for p in learn.model.parameters())
    assert not learn.model.frozen


def test_tensor_annotations_subset_and_frac():
    learn = _learner()
    maps = _maps(learn)
    cb = c2f.FineStageCallback(maps, frac=None)
    pos, m = cb.select(learn.dls.train_ds)
    fct.test_eq(pos.tolist(), list(range(0, len(maps), 3)))          # every annotated image
    fct.test_eq(m.shape, (len(pos), 1, 8, 8))
    pos2, _ = c2f.FineStageCallback(maps, frac=0.1, seed=1).select(learn.dls.train_ds)
    fct.test_eq(len(pos2), round(0.1 * len(maps)))
    assert set(pos2.tolist()) <= set(pos.tolist())
    with pytest.raises(IndexError, match='subset positions'):
        c2f.FineStageCallback(maps, subset=[len(maps)]).select(learn.dls.train_ds)


def test_phantom_lookup_errors(tmp_path, monkeypatch):
    from cxr_noisy_lt.phantom import make_phantom
    monkeypatch.setenv('CXR_NOISY_LT_CACHE', str(tmp_path))
    ph = make_phantom(n=120, size=32, seed=3, cache_dir=False, progress=False)
    # not registered and not the seed-0 phantom: a clear error, not wrong annotations
    with pytest.raises(ValueError, match='register_phantom'):
        c2f.phantom_annotations(ph.frame, size=32)
    c2f.register_phantom(ph)
    try:
        a = c2f.phantom_annotations(ph.frame, size=32)
        fct.test_eq(len(a.boxes), len(ph.boxes))
    finally:
        annotations._PHANTOMS.clear()
    # the seed-0 phantom is found without registration (read or built in the cache)
    ph0 = make_phantom(n=120, size=32, seed=0, cache_dir=False, progress=False)
    a0 = c2f.phantom_annotations(ph0.frame, size=32)
    pd.testing.assert_frame_equal(a0.boxes.reset_index(drop=True), ph0.boxes.reset_index(drop=True))
    with pytest.raises(ValueError, match='not a phantom'):
        c2f.phantom_annotations(ph0.frame.drop(columns='gaze'))


# --- freezing by parameter, the split rule, the stage-2 objective, the stage-1 copy and the empty control ---

import torch.nn as nn
import torch.nn.functional as F


class _BNAct(nn.BatchNorm2d):
    "A batch norm with children, as timm's BatchNormAct2d."
    def __init__(self, n):
        super().__init__(n)
        self.act, self.drop = nn.ReLU(), nn.Identity()

    def forward(self, x): return self.drop(self.act(super().forward(x)))


class _Block(nn.Module):
    "A residual block with a layer-scale parameter sitting directly on it, as ConvNeXt's `gamma`."
    def __init__(self, n):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((n, 1, 1), 0.5))
        self.conv, self.bn = nn.Conv2d(n, n, 3, padding=1), _BNAct(n)

    def forward(self, x): return x + self.gamma * self.bn(self.conv(x))


class _TinyTimm(nn.Module):
    "A timm-like classifier whose last reported feature module is a norm alone (as DenseNet's norm5)."
    def __init__(self, n_classes=3, n=6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, n, 3, padding=1), _BNAct(n))
        self.stage1, self.stage2, self.norm = _Block(n), _Block(n), nn.BatchNorm2d(n)
        self.fc = nn.Linear(n, n_classes)
        self.num_features, self.num_classes = n, n_classes
        self.feature_info = [dict(module='stage1'), dict(module='stage2'), dict(module='norm')]

    def forward_features(self, x): return self.norm(self.stage2(self.stage1(self.stem(x))))
    def forward_head(self, x, pre_logits=False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)
    def get_classifier(self): return self.fc
    def forward(self, x): return self.forward_head(self.forward_features(x))


def test_split_steps_back_over_a_norm():
    m = _TinyTimm()
    assert c2f.split_point(m) == 'stage2'
    assert c2f.split_point(m, 'norm') == 'norm'                       # an explicit split is kept
    assert c2f.norm_only(m.norm) and c2f.norm_only(nn.ReLU()) and not c2f.norm_only(m.stage2)
    assert c2f.is_norm(_BNAct(2)) and not c2f.is_norm(m.stage1)


def test_freeze_by_parameter_and_eval_below_split():
    torch.manual_seed(0)
    net = c2f.CVDistillNet(_TinyTimm(), keep_stage1=False)
    m = net.model
    below = ['stem.0.weight', 'stem.0.bias', 'stem.1.weight', 'stem.1.bias',
             'stage1.gamma', 'stage1.conv.weight', 'stage1.conv.bias', 'stage1.bn.weight', 'stage1.bn.bias']
    assert net.lower_params == below                                   # gamma and the BNAct weights included
    assert {'stem', 'stem.1', 'stem.1.act', 'stage1', 'stage1.bn', 'stage1.bn.drop'} <= set(net.lower)
    assert not any(n.startswith(('stage2', 'norm', 'fc')) for n in net.lower)
    net.freeze().train()
    assert [n for n, p in m.named_parameters() if p.requires_grad] == [
        n for n, _ in m.named_parameters() if n.startswith(('stage2.', 'norm.'))]
    assert not any(m.get_submodule(n).training for n in net.lower) and not m.fc.training
    assert m.stage2.bn.training and m.norm.training and net.prior.training
    low = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(('stem.', 'stage1.'))}
    top = {k: v.clone() for k, v in m.state_dict().items() if k.startswith(('stage2.bn.running', 'norm.running'))}
    out = net(torch.randn(4, 1, 8, 8), torch.rand(4, 1, 4, 4))
    (out.logits_q.sum() + out.logits_p.sum()).backward()
    sd = m.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in low.items())          # no statistic below the split moved
    assert all(not torch.equal(sd[k], v) for k, v in top.items())      # those of the top did
    assert all(m.get_parameter(n).grad is None for n in below)
    net.unfreeze()
    assert all(p.requires_grad for p in net.parameters())


def test_auto_split_per_timm_family():
    from cxr_noisy_lt.learner import cxr_model
    want = {'resnet18': 'layer4', 'densenet121': 'features.denseblock4', 'efficientnet_b0': 'blocks.6',
            'convnext_tiny': 'stages.3'}
    for arch, split in want.items():
        m = cxr_model(arch, 4)
        assert c2f.split_point(m) == split, arch
        frozen = set(c2f.lower_parameters(m, split))
        top = sum(p.numel() for n, p in m.named_parameters()
                  if n not in frozen and not any(p is q for q in m.get_classifier().parameters()))
        assert top > 1_000_000, (arch, top)                            # a real stage, not a lone norm
        if arch == 'convnext_tiny': assert sum(n.endswith('gamma') for n in frozen) == 15


def _cvout(seed=0, B=5, C=3, D=4):
    g = torch.Generator().manual_seed(seed)
    return c2f.CVOut(*(torch.randn(B, k, generator=g) for k in (C, C, D, D, D, D)))


def test_cvi_objective_formula():
    o = _cvout()
    y = torch.tensor([[1., 0, 1], [0, 0, 1], [1, 1, 0], [0, float('nan'), 1], [1, 0, 0]])
    k = ~torch.isnan(y)
    bce = lambda z: F.binary_cross_entropy_with_logits(z[k], y[k])
    kl = c2f.gaussian_kl(o.mu_q, o.logvar_q, o.mu_p, o.logvar_p).mean()
    loss, parts = c2f.cv_objective(o, (y, torch.arange(5)), 0.25)
    torch.testing.assert_close(loss, bce(o.logits_q) + 0.25 * kl)
    torch.testing.assert_close(c2f.cv_objective(o, y, 0.25, 'joint')[0], bce(o.logits_p) + bce(o.logits_q) + 0.25 * kl)
    assert parts['loss_p'] == pytest.approx(bce(o.logits_p).item(), rel=1e-6)
    assert parts['kl'] == pytest.approx(kl.item(), rel=1e-6)
    with pytest.raises(ValueError, match='objective'):
        c2f.FineStageCallback(torch.zeros(5, 1, 4, 4), objective='vkd')


def test_cvi_prior_learns_only_through_kl():
    torch.manual_seed(0)
    net = c2f.CVDistillNet(_TinyTimm(), keep_stage1=False).freeze().train()
    with torch.no_grad():
        for lin in (net.prior, net.posterior): lin.weight.normal_(0, 0.1)
        net.prior.bias[net.latent:].fill_(-1.); net.posterior.bias[net.latent:].fill_(-1.)
    o = net(torch.randn(6, 1, 8, 8), torch.rand(6, 1, 4, 4))
    y = torch.randint(0, 2, (6, 3)).float()
    kl = c2f.gaussian_kl(o.mu_q, o.logvar_q, o.mu_p, o.logvar_p).mean()
    ps = list(net.prior.parameters())
    grad = lambda t: torch.autograd.grad(t, ps, retain_graph=True, allow_unused=True, materialize_grads=True)
    g_cvi, g_kl = grad(c2f.cv_objective(o, y, 0.3)[0]), grad(0.3 * kl)
    for a, b in zip(g_cvi, g_kl): torch.testing.assert_close(a, b)
    assert all(t.abs().sum() > 0 for t in g_kl)
    g_joint = grad(c2f.cv_objective(o, y, 0.3, 'joint')[0])
    assert max((a - b).abs().max().item() for a, b in zip(g_joint, g_kl)) > 1e-5


def test_default_beta_and_stage2_defaults():
    learn = _learner()
    fine = c2f.fit_coarse_to_fine(learn, 0, 1, 1e-3, annotations=_maps(learn), frac=None)
    assert fine.objective == 'cvi' and fine.beta_peak == pytest.approx(1 / 4)
    h = pd.DataFrame(fine.history)
    assert h['beta'].max() <= 1 / 4 + 1e-12 and h['beta'].iloc[0] == 0
    fine2 = c2f.fit_coarse_to_fine(learn, 0, 1, 1e-3, annotations=_maps(learn), frac=None, objective='joint', beta_max=0.05)
    assert fine2.beta_peak == 0.05


def test_empty_control_and_stage1_copy():
    learn = _learner()
    maps = _maps(learn)
    learn.fit(1, 1e-3)
    from cxr_noisy_lt.learner import predict_split
    p1, _, _ = predict_split(learn, split='test')
    fine = c2f.fit_coarse_to_fine(learn, 0, 1, 1e-3, annotations=maps, frac=None, control='empty')
    assert fine.positions.tolist() == list(range(0, len(maps), 3))     # the subset of the annotated run
    assert fine.maps.abs().sum().item() == 0
    ps1, _, _ = predict_split(learn, split='test', model=learn.model.stage1_model())
    np.testing.assert_allclose(ps1, p1, atol=1e-6)
    p2, _, _ = predict_split(learn, split='test')
    assert np.abs(p2 - p1).max() > 1e-5
    with pytest.raises(ValueError, match='control'):
        c2f.FineStageCallback(maps, control='zeros')
