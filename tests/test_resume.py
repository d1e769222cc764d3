"""Exact resume: `fit_one_cycle(4)` without a break equals the same fit stopped after epoch 2, saved, loaded into a new
learner and continued with `fit_one_cycle(4, start_epoch=2)`; checkpoints of other classes, data or methods are refused."""
import numpy as np
import pytest
import torch
import fastcore.test as fct
from fastai.callback.core import Callback, CancelFitException
from fastai.torch_core import set_seed

from cxr_noisy_lt.data import toy_cxr, cxr_dls
from cxr_noisy_lt.labels import NIH14
from cxr_noisy_lt.learner import cxr_learner, train_state_of, resumed_epoch
from cxr_noisy_lt.nvum import NVUMCallback
from cxr_noisy_lt.ral import RobustAsymmetricLoss
from cxr_noisy_lt.mixup import joint_contrastive_attmix_learner, AUX_KEY
from cxr_noisy_lt.coarse2fine import CoarseStageCallback, FineStageCallback, CVDistillNet
from cxr_noisy_lt.twostage import MetricLearningCallback, RebalanceStage, HEAD_KEY

torch.set_num_threads(1)
CLASSES = list(NIH14[:4])
LR = 1e-2


def data(n=120, classes=CLASSES, seed=0):
    return toy_cxr(n=n, size=16, classes=classes, seed=seed)


def learner(path, seed=0, n=120, classes=CLASSES, **kw):
    "A tiny learner; `seed` seeds every generator (torch, Python, NumPy) before the model is drawn; the data stays the same."
    frame, images = data(n, classes)
    dls = cxr_dls(frame, classes, images, bs=16, seed=0)
    set_seed(seed)
    learn = cxr_learner(dls, 'narrow_resnet10', metrics=[], path=path, **kw)
    learn.recorder.train_metrics = False
    return learn


class Record(Callback):
    "Item indices and a checksum of the augmented images of every training batch, by epoch."
    order = 90
    def before_fit(self): self.batches = []
    def before_batch(self):
        if self.training:
            self.batches.append((self.epoch, self.learn.yb[1].tolist(), float(self.learn.xb[0].double().sum())))


class StopAfter(Callback):
    "Save to `name` at the end of epoch `epoch` (0-based) and stop: an interrupted run."
    order = 95
    def __init__(self, epoch, name): self.stop_epoch, self.fname = epoch, name
    def after_epoch(self):
        if self.epoch == self.stop_epoch:
            self.learn.save(self.fname)
            raise CancelFitException()


def fit(learn, *args, **kw):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(*args, **kw)


def tensors(model):
    "Every tensor of the model's state, the stage-1 copy of a stage-2 network included."
    sd = {k: v for k, v in model.state_dict().items() if torch.is_tensor(v)}
    if isinstance(model, CVDistillNet) and model._stage1 is not None:
        sd.update({'stage1.' + k: v for k, v in model._stage1.state_dict().items() if torch.is_tensor(v)})
    return sd


def assert_same_state(a, b, eps=1e-6):
    sa, sb = tensors(a.model), tensors(b.model)
    assert sa.keys() == sb.keys(), sorted(set(sa) ^ set(sb))[:5]
    for k in sa: fct.test_close(sa[k].double(), sb[k].double(), eps=eps)
    # the optimiser state too (Adam's averages and step counts)
    oa, ob = a.opt.state_dict()['state'], b.opt.state_dict()['state']
    fct.test_eq(len(oa), len(ob))
    for x, y in zip(oa, ob):
        fct.test_eq(x.keys(), y.keys())
        for k in x:
            if torch.is_tensor(x[k]): fct.test_close(x[k].double(), y[k].double(), eps=eps)
            else: fct.test_eq(x[k], y[k])


def check_resume(tmp_path, make, stage_cbs=lambda: [], prepare=None):
    """Train `make()` (after `prepare(learn)`, e.g. an earlier stage) for 4 epochs under `stage_cbs()`; again, stopped after
    epoch 2 and saved; then a fresh `make(seed=1)` with `stage_cbs()` loads the checkpoint and resumes at epoch 2."""
    prepare = prepare or (lambda learn: None)
    a, rec_a = make(tmp_path, seed=0), Record()
    prepare(a)
    fit(a, 4, LR, cbs=stage_cbs() + [rec_a])
    b = make(tmp_path, seed=0)
    prepare(b)
    fit(b, 4, LR, cbs=stage_cbs() + [StopAfter(1, 'ck')])
    c, rec_c = make(tmp_path, seed=1), Record()
    cbs = stage_cbs()
    with c.added_cbs(cbs):
        before = {k: v.clone() for k, v in tensors(c.model).items()}
        c.load('ck')
        assert any(not torch.equal(before[k], v) for k, v in tensors(c.model).items() if k in before)
        fit(c, 4, LR, start_epoch=2, cbs=rec_c)
    late = [r for r in rec_a.batches if r[0] >= 2]
    assert len(late) > 0
    fct.test_eq([(e, i) for e, i, _ in rec_c.batches], [(e, i) for e, i, _ in late])        # data order of epochs 3-4
    fct.test_close(np.array([s for *_, s in rec_c.batches]), np.array([s for *_, s in late]), eps=1e-6)   # augmentation
    assert_same_state(a, c)
    # the random state at the end is the same as well
    sa, sc = train_state_of(a.model).snapshot, train_state_of(c.model).snapshot
    fct.test_eq(sa['torch'], sc['torch']); fct.test_eq(sa['python'], sc['python']); fct.test_eq(sa['loader'], sc['loader'])
    return a, c


def test_bce(tmp_path):
    check_resume(tmp_path, learner)


def test_ral(tmp_path):
    a, c = check_resume(tmp_path, lambda p, seed: learner(p, seed, loss_func=RobustAsymmetricLoss(reduction='mean')))
    fct.test_eq(type(c.loss_func).__name__, 'RobustAsymmetricLoss')


def test_nvum(tmp_path):
    a, c = check_resume(tmp_path, lambda p, seed: learner(p, seed, cbs=NVUMCallback()))
    assert c.nvum.memory.memory.abs().sum() > 0
    fct.test_eq(c.nvum.state.teacher.n_updates.item(), a.nvum.state.teacher.n_updates.item())
    fct.test_eq(c.nvum.state.teacher.n_updates.item(), 4 * len(c.dls.train))


def test_attention_mixup_and_contrastive(tmp_path):
    def make(p, seed):
        frame, images = data()
        set_seed(seed)
        learn = joint_contrastive_attmix_learner(cxr_dls(frame, CLASSES, images, bs=16, seed=0), 'narrow_resnet10',
                                                 metrics=[], path=p)
        learn.recorder.train_metrics = False
        return learn
    a, c = check_resume(tmp_path, make)
    assert {f'{AUX_KEY}.attention.embed.weight', f'{AUX_KEY}.projection.net.0.weight'} <= set(c.model.state_dict())


def _maps(learn):
    m = torch.zeros(len(learn.dls.train_ds), 1, 4, 4)
    m[::2, 0, :2, :2] = 1
    return m


def test_coarse_to_fine_stage1(tmp_path):
    check_resume(tmp_path, learner, stage_cbs=lambda: [CoarseStageCallback()])


def test_coarse_to_fine_stage2(tmp_path):
    "Stage 2 resumed in a fresh learner: the stage-2 network, its frozen layers and the stage-1 copy come from the checkpoint."
    fine = lambda: [FineStageCallback(_maps(learner(tmp_path)), frac=None, bs=8)]
    a, c = check_resume(tmp_path, learner, stage_cbs=fine, prepare=lambda l: fit(l, 1, LR, cbs=CoarseStageCallback()))
    assert isinstance(c.model, CVDistillNet)
    # the stage-1 copy is that of the stage-1 weights, not of the fresh learner's
    s1a, s1c = a.model._stage1.state_dict(), c.model._stage1.state_dict()
    for k in s1a: fct.test_eq(s1a[k], s1c[k])


def test_two_stage_stage1(tmp_path):
    check_resume(tmp_path, learner, stage_cbs=lambda: [MetricLearningCallback('supcon')])


def test_two_stage_stage2(tmp_path):
    """Stage 2 resumed in a fresh learner: the re-initialised classifier is the checkpoint's (not drawn again), the balanced
    sampler continues, and the projection head stage 1 left on the model is re-created from the checkpoint."""
    a, c = check_resume(tmp_path, learner, stage_cbs=lambda: [RebalanceStage('rarest')],
                        prepare=lambda l: fit(l, 1, LR, cbs=MetricLearningCallback('supcon')))
    assert HEAD_KEY in c.model._modules
    assert all(p.requires_grad for p in c.model.parameters())           # unfrozen after the stage, as without a break


# --- checkpoints that do not belong to the learner -------------------------------------------------------------------

def _saved(tmp_path, name, **kw):
    learn = learner(tmp_path, **kw)
    fit(learn, 1, LR)
    learn.save(name)
    return learn


def _refused(learn, name, match):
    before = {k: v.clone() for k, v in tensors(learn.model).items()}
    with pytest.raises(ValueError, match=match): learn.load(name)
    for k, v in tensors(learn.model).items(): assert torch.equal(before[k], v), k              # nothing was loaded


def test_other_classes_refused(tmp_path):
    _saved(tmp_path, 'ck')
    other = learner(tmp_path, classes=list(NIH14[4:8]), seed=1)                  # same number of classes, other names
    _refused(other, 'ck', r"class 0 is 'Atelectasis' in the checkpoint and 'Mass' in the learner")
    five = learner(tmp_path, classes=list(NIH14[:5]), seed=1)
    _refused(five, 'ck', 'the checkpoint has 4 classes')


def test_other_training_set_refused(tmp_path):
    ref = _saved(tmp_path, 'ck')
    other = learner(tmp_path, n=150, seed=1)
    _refused(other, 'ck', f"trained on {len(ref.dls.train_ds)} training items, the learner's training set has {len(other.dls.train_ds)}")


def test_other_method_refused(tmp_path):
    _saved(tmp_path, 'bce')
    _refused(learner(tmp_path, cbs=NVUMCallback(), seed=1), 'bce', r"method callbacks \[\], the learner has \['nvum'\]")
    _refused(learner(tmp_path, loss_func=RobustAsymmetricLoss(reduction='mean'), seed=1), 'bce',
             'loss MaskedBCEWithLogits, the learner has RobustAsymmetricLoss')
    _saved(tmp_path, 'nvum', cbs=NVUMCallback())
    _refused(learner(tmp_path, cbs=NVUMCallback(base_loss=RobustAsymmetricLoss(reduction='mean')), seed=1), 'nvum',
             r"\['nvum'\], the learner has \['nvum\(base_loss=RobustAsymmetricLoss\)'\]")
    # a learner without method callbacks may take the weights alone, with strict=False
    plain = learner(tmp_path, seed=1)
    with pytest.raises(RuntimeError, match='nvum.memory.memory'): plain.load('nvum')
    plain.load('nvum', strict=False)


def test_resume_needs_the_interrupted_fit(tmp_path):
    "A stage checkpoint loads into a plain learner (weights only), but resuming it without the stage's callback is refused."
    b = learner(tmp_path)
    fit(b, 1, LR)
    fit(b, 4, LR, cbs=[RebalanceStage('rarest'), StopAfter(1, 'ck')])
    c = learner(tmp_path, seed=1)
    c.load('ck')
    with pytest.raises(ValueError, match=r"does not continue the loaded checkpoint.*\['rebalance-stage'\], the learner has \[\]"):
        fit(c, 4, LR, start_epoch=2)
    fct.test_eq(resumed_epoch(c), 0)
