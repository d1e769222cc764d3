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
    probs = run_one(m, frame, images, CLASSES, epochs=2, lr=1e-2, bs=16, arch='test_resnet', seed=0)
    fct.test_eq(probs.shape, ((frame.split == 'test').sum(), 4))
    assert np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()
    # same seed, same numbers: the balanced loader of stage 2 is seeded from the training loader
    probs2 = run_one(m, frame, images, CLASSES, epochs=2, lr=1e-2, bs=16, arch='test_resnet', seed=0)
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
