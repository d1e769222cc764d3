"""Every method in a user's own fastai training: a `DataBlock` over the NIH example folder (image files, a metadata
CSV with '|'-separated findings), on fastai's `vision_learner` and on `cxr_learner`. The item index is exact under
shuffling, drop_last, worker processes and fastai's `DistributedDL`; NVUM's memory is the same as through `cxr_dls`;
what is missing (boxes, a loader that can give the index) is named with the line that fixes it."""
import copy, random, warnings
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import fastcore.test as fct
from fastcore.basics import noop
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.data.block import DataBlock, MultiCategoryBlock, ColReader, ColSplitter
from fastai.data.core import DataLoaders
from fastai.data.transforms import Normalize
from fastai.distributed import DistributedDL
from fastai.learner import Learner
from fastai.torch_core import set_seed
from fastai.vision.augment import aug_transforms
from fastai.vision.core import PILImageBW
from fastai.vision.data import ImageBlock
from fastai.vision.learner import vision_learner

from cxr_noisy_lt.datasets.core import make_example
from cxr_noisy_lt.datasets.nih import nih_boxes, NIH_BBOX
from cxr_noisy_lt.data import with_item_index, carries_item_index, cxr_dls
from cxr_noisy_lt.labels import NIH14, NO_FINDING
from cxr_noisy_lt.learner import cxr_learner, MaskedBCEWithLogits
from cxr_noisy_lt.nvum import NVUMCallback
from cxr_noisy_lt.ral import RobustAsymmetricLoss, AsymmetricLoss, FocalLossMultiLabel
from cxr_noisy_lt.mixup import AttentionMixupCallback, ContrastiveCallback
from cxr_noisy_lt.twostage import fit_two_stage, MetricLearningCallback
from cxr_noisy_lt.coarse2fine import fit_coarse_to_fine, Annotations, CVDistillNet, FineStageCallback

torch.set_num_threads(1)
warnings.filterwarnings('ignore', message='.*no positive or no negative.*')
CLASSES = list(NIH14) + [NO_FINDING]
STATS = (0.45, 0.2)


@pytest.fixture(scope='module')
def nih(tmp_path_factory):
    "The NIH example folder (66 images of 32 px) and its metadata as a user reads it: a path column and a validation flag."
    root = make_example('nih', tmp_path_factory.mktemp('nih'), size=32, n_patients=40)
    df = pd.read_csv(root / 'Data_Entry_2017_v2020.csv')
    files = {p.name: p for p in root.glob('images_*/images/*.png')}
    df['path'] = df['Image Index'].map(lambda n: str(files[n]))
    df['is_valid'] = df['Image Index'].isin((root / 'test_list.txt').read_text().split())
    return root, df


def user_dls(df, bs=16, num_workers=0, aug=False, seed=0):
    "The user's own pipeline: a DataBlock of grayscale images and '|'-separated findings."
    db = DataBlock(blocks=(ImageBlock(PILImageBW), MultiCategoryBlock(vocab=CLASSES)),
                   get_x=ColReader('path'), get_y=ColReader('Finding Labels', label_delim='|'),
                   splitter=ColSplitter('is_valid'),
                   batch_tfms=([*aug_transforms(do_flip=False, max_rotate=5)] if aug else []) + [Normalize.from_stats(*STATS)])
    set_seed(seed)
    return db.dataloaders(df, bs=bs, num_workers=num_workers, device='cpu')


def quiet(learn):
    learn.remove_cb(ProgressCallback); learn.logger = noop
    return learn


class Seen(Callback):
    "What the loss and the metrics see of each training batch (the number of target elements), and the loss values."
    order = 90
    def before_fit(self): self.n_targets, self.losses = set(), []
    def after_loss(self):
        if self.training: self.n_targets.add(len(self.learn.yb)); self.losses.append(float(self.learn.loss))


# --- the item index: exact under shuffling, drop_last, worker processes and DistributedDL ------------------------

@pytest.mark.parametrize('num_workers', [0, 2])
def test_item_index_exact(nih, num_workers):
    "Each batch's idx is the position of its items: their targets are the dataset's; an epoch visits each item once; drop_last keeps whole batches; the order is that of the user's own loader."
    _, df = nih
    dls = user_dls(df, bs=16, num_workers=num_workers)
    ds = dls.train_ds
    idls = with_item_index(dls)
    fct.test_eq((idls.n_inp, idls.train.shuffle, idls.train.drop_last, idls.train.fake_l.num_workers), (1, True, True, num_workers))
    assert carries_item_index(idls.train) and not carries_item_index(dls.train)
    plain = [(x, y) for x, y in dls.train]                     # the user's loader, from the same random state
    seen = []
    for (x, y, idx), (x0, y0) in zip(idls.train, plain):
        fct.test_eq(y, torch.stack([ds[i][1] for i in idx.tolist()]))
        fct.test_eq((x, y), (x0, y0))
        seen += idx.tolist()
    fct.test_eq(len(seen), len(ds) // 16 * 16)
    fct.test_eq(len(set(seen)), len(seen))
    again = torch.cat([b[2] for b in idls.train])              # a new epoch, a new order
    assert not torch.equal(again, torch.tensor(seen))
    fct.test_eq(torch.cat([b[2] for b in idls.valid]).tolist(), list(range(len(dls.valid_ds))))


def test_distributed_dl_keeps_dataset_indices(nih):
    "fastai's DistributedDL splits the wrapped loader's positions between the ranks and pads them to an even share: idx stays the position in the whole dataset."
    _, df = nih
    dls = user_dls(df, bs=8)
    idls = with_item_index(dls)
    ds = dls.train_ds
    n = len(ds)
    def ranks(dl):
        out = []
        for rank in (0, 1):
            d = dl.new()
            d.rng = random.Random(0)                             # every process starts from the same state
            ddl = DistributedDL(d, rank=rank, world_size=2, device='cpu')
            ddl._broadcast = lambda t, rank: t                   # one process stands in for both ranks
            got = []
            for x, y, idx in ddl:
                fct.test_eq(y, torch.stack([ds[i][1] for i in idx.tolist()]))
                got += idx.tolist()
            out.append(got)
        return out
    # in order: rank 0 reads positions 0..28, rank 1 29..56 and, to even out, position 0 again
    r0, r1 = ranks(idls.train.new(shuffle=False, drop_last=False))
    fct.test_eq((r0, r1), (list(range((n + 1) // 2)), list(range((n + 1) // 2, n)) + [0] * (n % 2)))
    r0, r1 = ranks(idls.train)                                   # shuffled, drop_last on each rank's share
    fct.test_eq((len(r0), len(r1)), ((n + 1) // 2 // 8 * 8,) * 2)
    assert not set(r0) & set(r1) and set(r0 + r1) <= set(range(n))


# --- every method, on vision_learner and on cxr_learner, over the user's DataBlock ---------------------------------

def vision(dls, **kw): return quiet(vision_learner(dls, 'resnet18', n_in=1, pretrained=False, **kw))
def cxr(dls, **kw): return quiet(cxr_learner(dls, 'narrow_resnet10', **kw))


def user_boxes(root, df):
    "The user's boxes frame: NIH's own boxes of these images, and a box drawn by hand on a few more training images."
    b = nih_boxes(root / NIH_BBOX)[['image', 'label', 'x0', 'y0', 'x1', 'y1']]
    more = df.loc[~df.is_valid, 'Image Index'].iloc[:6]
    hand = pd.DataFrame({'image': more, 'label': 'Nodule', 'x0': 0.2, 'y0': 0.3, 'x1': 0.4, 'y1': 0.5})
    return pd.concat([b[b['image'].isin(df['Image Index'])], hand], ignore_index=True)


METHODS = ['nvum', 'ral', 'asl', 'focal', 'attmix', 'contrastive', 'twostage', 'coarse2fine']


@pytest.mark.parametrize('make', [vision, cxr], ids=['vision_learner', 'cxr_learner'])
@pytest.mark.parametrize('method', METHODS)
def test_method_trains_in_user_pipeline(nih, make, method):
    root, df = nih
    dls = user_dls(df, aug=True)
    seen = Seen()
    losses = dict(ral=RobustAsymmetricLoss(reduction='mean'), asl=AsymmetricLoss(reduction='mean'),
                  focal=FocalLossMultiLabel(), coarse2fine=MaskedBCEWithLogits())
    cbs = dict(nvum=NVUMCallback(), attmix=AttentionMixupCallback(hidden=16), contrastive=ContrastiveCallback(weight=0.1))
    kw = dict(loss_func=losses[method]) if method in losses else {}
    learn = make(dls, cbs=[seen] + ([cbs[method]] if method in cbs else []), **kw)
    if method == 'twostage':
        model = fit_two_stage(learn, stage1_epochs=1, stage2_epochs=1, lr=1e-3, views=2)
        assert model is learn.model
    elif method == 'coarse2fine':
        fine = fit_coarse_to_fine(learn, 1, 1, lr=1e-3, annotations=Annotations(user_boxes(root, df), key='Image Index'), frac=None)
        assert isinstance(learn.model, CVDistillNet) and len(fine.positions) >= 6 and len(fine.history) > 0
        assert all(np.isfinite(h['loss_p']) for h in fine.history)
    else: learn.fit(1, 1e-3)
    assert seen.losses and all(np.isfinite(seen.losses)), seen.losses
    fct.test_eq(learn.dls.train is dls.train, True)                            # the user's loader is back
    if method in ('nvum', 'attmix', 'contrastive', 'ral', 'asl', 'focal'):
        fct.test_eq(seen.n_targets, {1})                                        # the loss saw (logits, target)
    if method == 'nvum':
        mem = learn.nvum.memory.memory
        fct.test_eq(mem.shape, (len(dls.train_ds), len(CLASSES)))              # one row per training image
        fct.test_eq(int((mem.abs().sum(1) > 0).sum()), len(dls.train_ds) // 16 * 16)
    if method == 'contrastive': assert torch.isfinite(learn.contrastive.last_loss)
    preds, targs = learn.get_preds(dl=dls.valid)
    fct.test_eq((preds.shape, targs.shape), ((len(dls.valid_ds), len(CLASSES)),) * 2)


# --- the same NVUM memory through a user's DataBlock as through cxr_dls --------------------------------------------

def test_nvum_memory_same_as_cxr_dls(nih):
    """NVUM's memory after one epoch, from (a) the user's DataBlock with `with_item_index`, (a') the same DataBlock
    alone (the callback finds the index) and (b) `cxr_dls` over the same files: the same items in each split, the
    same order (both loaders shuffle with a `random.Random(0)`), the same pixels (both read the 32 px PNGs as 8-bit
    grayscale, scale by 1/255 and normalise with the same statistics; no augmentation), the same network, initial
    weights, loss (the masked BCE) and torch seed for NVUM's mixup draws: equal to 1e-6."""
    root, df = nih
    frame = df.assign(image=df['path'], patient=df['Patient ID'], split=np.where(df.is_valid, 'valid', 'train'))
    y = np.zeros((len(df), len(CLASSES)), np.float32)
    for r, f in enumerate(df['Finding Labels']):
        for c in f.split('|'): y[r, CLASSES.index(c)] = 1
    frame[CLASSES] = y
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, len(CLASSES)))

    def memory(dls):
        dls.train.rng = random.Random(0)
        learn = quiet(Learner(dls, copy.deepcopy(net), loss_func=MaskedBCEWithLogits(), cbs=NVUMCallback(), lr=1e-2))
        set_seed(1)
        learn.fit(1)
        return learn.nvum.memory.memory.clone()

    a = memory(with_item_index(user_dls(df)))
    a_auto = memory(user_dls(df))
    b = memory(cxr_dls(frame, CLASSES, bs=16, aug=False, stats=STATS, seed=0, size=32, device='cpu'))
    written = b.abs().sum(1) > 0
    fct.test_eq(int(written.sum()), len(b) // 16 * 16)
    fct.test_close(a, b, eps=1e-6)
    fct.test_close(a_auto, b, eps=1e-6)


# --- what is missing, and the line that fixes it -----------------------------------------------------------------

def test_coarse_to_fine_without_boxes_says_how(nih):
    root, df = nih
    learn = vision(user_dls(df))
    with pytest.raises(TypeError, match=r"fit_coarse_to_fine\(learn, annotations=Annotations\(boxes, key='Image Index'\)\)"):
        fit_coarse_to_fine(learn, 0, 1)
    boxes = user_boxes(root, df)
    with pytest.raises(KeyError, match=r"no 'image' column.*Annotations\(boxes, key='Image Index'\)"):
        learn.fit(1, cbs=FineStageCallback(Annotations(boxes)))
    with pytest.raises(ValueError, match=r"none of the \d+ training images has an annotation.*column 'Patient ID'"):
        learn.fit(1, cbs=FineStageCallback(Annotations(boxes, key='Patient ID')))


def test_loader_that_cannot_give_the_index_says_how(nih):
    "A PyTorch DataLoader has no item positions to add: the message names the fastai DataLoaders that do."
    _, df = nih
    dls = user_dls(df)
    tdl = torch.utils.data.DataLoader(list(zip(torch.randn(32, 1, 32, 32), torch.zeros(32, len(CLASSES)))), batch_size=8)
    model = vision(dls).model
    for cb in (NVUMCallback(), MetricLearningCallback(), ContrastiveCallback()):
        learn = quiet(Learner(DataLoaders(tdl, tdl), model, loss_func=MaskedBCEWithLogits(), cbs=cb))
        with pytest.raises(TypeError, match=rf"{type(cb).__name__}: the training DataLoader is a torch.utils.data.dataloader."
                                            r"DataLoader.*dls = DataLoaders.from_dsets\(train_ds, valid_ds, bs=64\)"):
            learn.fit(1)
