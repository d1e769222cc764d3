"NVUM: the memory and the teacher travel with learn.save / learn.load, and stay out of the optimiser."
import pickle
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import fastcore.test as fct
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.torch_core import params
import fastai.callback.core
import fastai.callback.progress  # noqa: F401  (learn.no_bar)

from cxr_noisy_lt.nvum import NVUMCallback, masked_mean, nvum_state, strip_nvum, _student_state

torch.set_num_threads(1)


class Toy(torch.utils.data.Dataset):
    n_inp = 1
    def __init__(self, n=42, c=3, seed=0, nan_frac=0.):
        g = torch.Generator().manual_seed(seed)
        self.labels = (torch.rand(n, c, generator=g) < 0.4).float()
        self.x = torch.randn(n, 1, 8, 8, generator=g)
        self.x[:, 0, :c, 0] += 2 * self.labels
        self.labels[torch.rand(n, c, generator=g) < nan_frac] = float('nan')
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i], self.labels[i], i


class Net(nn.Module):
    def __init__(self, c=3):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, c)
    def forward(self, x): return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def seq_net(c=3):
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, c))


def masked_bce(z, y, *extra):
    return masked_mean(F.binary_cross_entropy_with_logits(z, y.nan_to_num(0.), reduction='none'), y)


def toy_learner(path, cbs=None, seed=0, model=None, nan_frac=0.2, **kw):
    torch.manual_seed(seed)
    dls = DataLoaders.from_dsets(Toy(42, nan_frac=nan_frac), Toy(16, seed=1), bs=8, device='cpu')
    return Learner(dls, model if model is not None else Net(), loss_func=masked_bce, cbs=cbs, lr=1e-2, path=path, **kw)


def fit(learn, n=1):
    with learn.no_bar(), learn.no_logging(): learn.fit(n)


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa: fct.test_eq(sa[k], sb[k])


def test_save_load_restores_memory_teacher_and_student(tmp_path):
    learn = toy_learner(tmp_path, cbs=NVUMCallback())
    fit(learn, 2)
    assert learn.nvum.memory.memory.abs().sum() > 0
    keys = learn.model.state_dict().keys()
    assert 'nvum.memory.memory' in keys and 'nvum.teacher.n_updates' in keys
    assert any(k.startswith('nvum.teacher.module.') for k in keys)
    learn.save('ck')

    learn2 = toy_learner(tmp_path, cbs=NVUMCallback(), seed=1)
    assert learn2.nvum.memory.memory.abs().sum() == 0
    learn2.load('ck')
    same_state(learn2.nvum.memory, learn.nvum.memory)
    same_state(learn2.nvum.state.teacher, learn.nvum.state.teacher)
    for k, v in _student_state(learn.model).items(): fct.test_eq(_student_state(learn2.model)[k], v)
    # the teacher differs from the student (it is an average), and both were restored
    assert any(not torch.equal(v, _student_state(learn2.model)[k])
               for k, v in learn2.nvum.state.teacher.module.state_dict().items() if v.is_floating_point())


class Snap(fastai.callback.core.Callback):
    "the teacher's state when training starts (after NVUMCallback.before_fit)"
    order = -20
    def before_fit(self): self.t0 = None
    def before_train(self):
        if self.t0 is None:
            self.t0 = {k: v.clone() for k, v in self.learn.nvum.state.teacher.module.state_dict().items()}


def test_resume_keeps_the_teacher(tmp_path):
    learn = toy_learner(tmp_path, cbs=NVUMCallback())
    fit(learn, 1)
    learn.save('ck')
    learn2 = toy_learner(tmp_path, cbs=NVUMCallback(), seed=3).load('ck')
    loaded = {k: v.clone() for k, v in learn2.nvum.state.teacher.module.state_dict().items()}
    n0 = learn2.nvum.state.teacher.n_updates.item()
    snap = Snap()
    fit(learn2.add_cb(snap), 1)
    fct.test_eq(learn2.nvum.state.teacher.n_updates.item(), n0 + 5)
    # training resumed from the loaded teacher, which differs from the student
    for k, v in loaded.items(): fct.test_eq(snap.t0[k], v)
    assert not torch.equal(loaded['fc.weight'], _student_state(learn.model)['fc.weight'])


def test_load_into_learner_that_got_the_callback_later(tmp_path):
    learn = toy_learner(tmp_path, cbs=NVUMCallback())
    fit(learn, 1)
    learn.save('ck')
    learn2 = toy_learner(tmp_path, seed=2)
    learn2.add_cb(NVUMCallback())            # attaches at once: the checkpoint loads strictly
    learn2.load('ck')
    same_state(learn2.nvum.memory, learn.nvum.memory)


def test_plain_checkpoint_then_nvum(tmp_path):
    plain = toy_learner(tmp_path)
    fit(plain, 1)
    plain.save('plain')
    learn = toy_learner(tmp_path, cbs=NVUMCallback(), seed=5)
    with pytest.raises(RuntimeError, match='nvum'):
        learn.load('plain')                  # strict: the nvum.* entries are missing
    learn.load('plain', strict=False)
    snap = Snap()
    fit(learn.add_cb(snap), 1)
    # the teacher started from the loaded student, not from the random init
    for k, v in _student_state(plain.model).items(): fct.test_eq(snap.t0[k], v)


def test_teacher_never_in_optimiser_even_with_greedy_splitter(tmp_path):
    learn = toy_learner(tmp_path, cbs=NVUMCallback(), model=seq_net(), splitter=lambda m: [params(m)])
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad(): out_before = learn.model.eval()(x)
    fit(learn, 1)
    st = learn.nvum.state
    opt_ids = {id(p) for pg in learn.opt.param_lists for p in pg}
    assert opt_ids and not any(id(p) in opt_ids for p in st.parameters())
    assert all(p.grad is None and not p.requires_grad for p in st.parameters())
    # unfreezing does not bring them back
    learn.unfreeze()
    opt_ids = {id(p) for pg in learn.opt.param_lists for p in pg}
    assert not any(id(p) in opt_ids for p in st.parameters())
    # the identity forward keeps nn.Sequential models working
    fct.test_eq(len(list(learn.model.children())), 7)
    with torch.no_grad(): out = learn.model.eval()(x)
    assert out.shape == out_before.shape
    teacher = strip_nvum(learn.model)
    assert teacher is not None and nvum_state(learn.model) is None
    with torch.no_grad(): fct.test_close(learn.model.eval()(x), out, eps=1e-6)


def test_model_is_back_after_validation_and_cancel(tmp_path):
    learn = toy_learner(tmp_path, cbs=NVUMCallback())
    student = learn.model
    fit(learn, 1)
    assert learn.model is student
    learn.get_preds(ds_idx=1)
    assert learn.model is student


def test_memory_size_mismatch_is_explained(tmp_path):
    learn = toy_learner(tmp_path, cbs=NVUMCallback())
    torch.manual_seed(0)
    other = DataLoaders.from_dsets(Toy(30), Toy(16, seed=1), bs=8, device='cpu')
    with pytest.raises(ValueError, match='memory of 42 items but the training set has 30'):
        Learner(other, learn.model, loss_func=masked_bce, cbs=NVUMCallback())


def test_model_pickles_with_its_state(tmp_path):
    learn = toy_learner(tmp_path, cbs=NVUMCallback())
    fit(learn, 1)
    m = pickle.loads(pickle.dumps(learn.model))
    same_state(m, learn.model)
    cb = pickle.loads(pickle.dumps(learn.nvum))
    assert cb.reg_weight == 1.0



def test_teacher_has_no_training_state_of_its_own(tmp_path):
    "With cxr_learner the student carries a TrainState; its teacher copy does not, and the EMA pairs only weights."
    from cxr_noisy_lt.data import toy_cxr, cxr_dls
    from cxr_noisy_lt.learner import cxr_learner, TRAIN_STATE_KEY
    frame, images = toy_cxr(n=60, size=16, seed=0)
    dls = cxr_dls(frame, list(frame.columns[3:7]), images, bs=8, seed=0)
    learn = cxr_learner(dls, 'narrow_resnet10', metrics=[], cbs=NVUMCallback(), path=tmp_path)
    fit(learn, 1)
    keys = learn.model.state_dict().keys()
    assert f'{TRAIN_STATE_KEY}._extra_state' in keys
    assert not any(TRAIN_STATE_KEY in k for k in keys if k.startswith('nvum.'))
    assert TRAIN_STATE_KEY not in _student_state(learn.model) and not any(k.startswith('nvum.') for k in _student_state(learn.model))
    learn.save('ck')
    learn2 = cxr_learner(dls, 'narrow_resnet10', metrics=[], cbs=NVUMCallback(), path=tmp_path).load('ck')
    same_state(learn2.nvum.state, learn.nvum.state)
