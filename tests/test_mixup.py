"Attention mixup / contrastive callbacks: checkpoints, export, hooks, several timm architectures."
import copy
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import fastcore.test as fct
import fastai.callback.progress  # noqa: F401  (learn.no_bar)

from cxr_noisy_lt.data import toy_cxr, cxr_dls
from cxr_noisy_lt.labels import NIH14
from cxr_noisy_lt.learner import cxr_learner, predict_split
from cxr_noisy_lt.mixup import (AttentionMixupCallback, ContrastiveCallback, HeadInput, aux_modules, classifier_of,
                                strip_aux, contrastive_pretrain)

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
