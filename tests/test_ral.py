"The RAL-module losses inside a fastai Learner: training with NaN labels and an item index, get_preds, pickling."
import pickle
import torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.learner import Learner
import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
import fastcore.test as fct
from cxr_noisy_lt.ral import RobustAsymmetricLoss, AsymmetricLoss, FocalLossMultiLabel


class _DS(torch.utils.data.Dataset):
    "Items (x, y, idx); about a fifth of the labels unknown (NaN)."
    def __init__(self, n=96, c=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, :c] > 0.5).float()
        self.y[torch.rand(n, c, generator=g) < 0.2] = float('nan')
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i], self.y[i], torch.tensor(i)


def _learner(loss_func):
    torch.manual_seed(0)
    dls = DataLoaders.from_dsets(_DS(seed=0), _DS(n=32, seed=1), bs=16, device='cpu')
    dls.n_inp = 1
    return Learner(dls, nn.Linear(8, 4), loss_func=loss_func, lr=1e-2)


def test_fit_and_get_preds():
    torch.set_num_threads(1)
    for loss in (RobustAsymmetricLoss(reduction='mean'), RobustAsymmetricLoss(), AsymmetricLoss(reduction='mean'),
                 FocalLossMultiLabel()):
        red, learn = loss.reduction, _learner(loss)
        with learn.no_logging(), learn.no_bar(): learn.fit(3)
        assert torch.isfinite(torch.tensor(learn.validate()[0])), loss
        probs, targs, losses = learn.get_preds(with_loss=True)
        y = targs[0] if isinstance(targs, (tuple, list)) else targs   # yb = (target, idx)
        fct.test_eq(probs.shape, (32, 4))
        assert ((probs >= 0) & (probs <= 1)).all()               # the loss's activation (sigmoid) was applied
        fct.test_eq(learn.loss_func.reduction, red)    # 'none' inside get_preds, restored afterwards
        # fastai turns the element-wise ('none') loss into one value per item: the row mean, unknown entries as 0
        logits = torch.logit(probs.double().clamp(1e-12, 1 - 1e-12)).float()
        orig, loss.reduction = loss.reduction, 'none'
        el = loss(logits, y)
        loss.reduction = orig
        fct.test_eq(losses.shape, (32,))
        fct.test_close(losses, el.mean(1), eps=1e-4)
        assert (el[torch.isnan(y)] == 0).all()


def test_training_lowers_the_loss():
    learn = _learner(RobustAsymmetricLoss(reduction='mean'))
    start = learn.validate()[0]
    with learn.no_logging(), learn.no_bar(): learn.fit(10, lr=3e-2)
    assert learn.validate()[0] < 0.8 * start


def test_pickle_roundtrip():
    z, y = torch.randn(4, 3), torch.tensor([[1., 0., float('nan')]] * 4)
    for loss in (RobustAsymmetricLoss(gamma_neg=2, lamb=1.2), AsymmetricLoss(clip=0.1), FocalLossMultiLabel(alpha=[0.2, 0.5, 0.8])):
        back = pickle.loads(pickle.dumps(loss))
        fct.test_close(back(z, y), loss(z, y))
        fct.test_eq(repr(back), repr(loss))
