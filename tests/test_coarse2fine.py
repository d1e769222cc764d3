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
        c2f._PHANTOMS.clear()
    # the seed-0 phantom is found without registration (read or built in the cache)
    ph0 = make_phantom(n=120, size=32, seed=0, cache_dir=False, progress=False)
    a0 = c2f.phantom_annotations(ph0.frame, size=32)
    pd.testing.assert_frame_equal(a0.boxes.reset_index(drop=True), ph0.boxes.reset_index(drop=True))
    with pytest.raises(ValueError, match='not a phantom'):
        c2f.phantom_annotations(ph0.frame.drop(columns='gaze'))
