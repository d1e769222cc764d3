"""Two CPU processes (gloo) under fastai's `distrib_ctx`, launched by torchrun: NVUM keeps one memory bank and one teacher,
metrics see the gathered predictions, and ranks that disagree on the data are refused; with a user's own `DataBlock`,
NVUM finds the item index itself and the memory is the same one bank."""
import os, socket, subprocess, sys, textwrap
import numpy as np
import pytest
import torch
import fastcore.test as fct

pytest.importorskip('accelerate', reason="fastai's distrib_ctx needs Accelerate")

N_TRAIN, N_VALID, EPOCHS = 41, 11, 2          # 41 items on 2 ranks: one padded duplicate per epoch

SCRIPT = textwrap.dedent(r'''
    import os, sys, warnings
    warnings.filterwarnings('ignore')
    import numpy as np, torch
    import torch.distributed as dist
    from fastai.callback.core import Callback
    from fastai.torch_core import set_seed, rank_distrib
    import fastai.distributed  # noqa: F401  (distrib_ctx)
    from cxr_noisy_lt.data import toy_cxr, cxr_dls
    from cxr_noisy_lt.labels import NIH14
    from cxr_noisy_lt.learner import cxr_learner, predict_split
    from cxr_noisy_lt.metrics import per_class_auc, macro
    from cxr_noisy_lt.nvum import NVUMCallback, NVUMMemory

    torch.set_num_threads(1)
    out, n_train, n_valid, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rank = rank_distrib()
    classes = list(NIH14[:4])
    frame, images = toy_cxr(n=n_train + n_valid + 8, size=16, classes=classes, images_per_patient=1, seed=0)
    frame['split'] = ['train'] * n_train + ['valid'] * n_valid + ['test'] * 8

    writes = []                                   # (epoch, item) of every memory write on this rank
    _update = NVUMMemory.update
    def update(self, idx, z):
        writes.extend((EPOCH[0], int(i)) for i in torch.as_tensor(idx).tolist())
        return _update(self, idx, z)
    NVUMMemory.update = update
    EPOCH = [0]
    class Epoch(Callback):
        def before_epoch(self): EPOCH[0] = self.epoch

    def learner(frame):
        dls = cxr_dls(frame, classes, images, bs=7, seed=0, device='cpu')
        set_seed(rank)                            # different draws per rank: the run must make them agree
        return cxr_learner(dls, 'narrow_resnet10', cbs=[NVUMCallback(), Epoch()], path=out)

    learn = learner(frame)
    with learn.no_bar(), learn.distrib_ctx(sync_bn=False, cpu=True):
        learn.fit_one_cycle(epochs, 1e-2)
        gathered = int(sum(len(p) for p in learn.metrics[0].preds))
    metric = float(learn.recorder.values[-1][-1])
    probs, targs, _ = predict_split(learn, learn.dls.valid, model=learn.nvum.teacher)   # this process alone, all items
    reference = float(macro(per_class_auc(targs, probs)))
    st = learn.nvum.state
    res = dict(memory=st.memory.memory.clone(), teacher={k: v.clone() for k, v in st.teacher.state_dict().items()},
               student={k: v.detach().clone() for k, v in learn.model.named_parameters() if not k.startswith('nvum.')},
               writes=writes, metric=metric, reference=reference, gathered=gathered)

    # ranks that read different data are refused before any batch
    short = frame.drop(index=frame.index[0]) if rank == 1 else frame
    bad = learner(short)
    try:
        with bad.no_bar(), bad.distrib_ctx(sync_bn=False, cpu=True): bad.fit(1, 1e-2)
        res['refused'] = None
    except ValueError as e: res['refused'] = str(e)
    torch.save(res, os.path.join(out, f'rank{rank}.pt'))
    dist.barrier()
    dist.destroy_process_group()
''')


def _torchrun(d, script, *args):
    (d / 'run.py').write_text(script)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    with socket.socket() as sk:
        sk.bind(('127.0.0.1', 0)); port = sk.getsockname()[1]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1', '--master_port', str(port),
           str(d / 'run.py'), str(d), *map(str, args)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    return [torch.load(d / f'rank{r}.pt', weights_only=False) for r in range(2)]


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    return _torchrun(tmp_path_factory.mktemp('ddp'), SCRIPT, N_TRAIN, N_VALID, EPOCHS)


def test_one_memory_bank_each_item_once_per_epoch(ranks):
    r0, r1 = ranks
    assert r0['memory'].abs().sum() > 0
    fct.test_eq(r0['memory'], r1['memory'])                          # the same memory on both ranks, to the bit
    for r in ranks:
        for e in range(EPOCHS):
            items = sorted(i for ep, i in r['writes'] if ep == e)
            fct.test_eq(items, list(range(N_TRAIN)))                 # every item once, the padded duplicate not again


def test_teacher_identical_on_all_ranks(ranks):
    """The teacher, BatchNorm statistics included, is one; so are the student's weights (its BatchNorm statistics are each
    rank's without SyncBatchNorm, as DistributedDataParallel leaves them)."""
    r0, r1 = ranks
    fct.test_eq(r0['teacher'].keys(), r1['teacher'].keys())
    for k in r0['teacher']: fct.test_eq(r0['teacher'][k], r1['teacher'][k])
    for k in r0['student']: fct.test_eq(r0['student'][k], r1['student'][k])
    steps = EPOCHS * ((N_TRAIN + 1) // 2 // 7)
    fct.test_eq(int(r0['teacher']['n_updates']), steps)


def test_metrics_on_gathered_predictions(ranks):
    for r in ranks:
        fct.test_eq(r['gathered'], N_VALID)                           # both ranks' predictions, the padding dropped
        fct.test_close(r['metric'], r['reference'], eps=1e-6)         # = the mean AUC of one process over all items
    fct.test_eq(ranks[0]['metric'], ranks[1]['metric'])


def test_ranks_with_different_data_refused(ranks):
    for r in ranks:
        assert r['refused'] is not None
        assert f'rank 0 has {N_TRAIN} training' in r['refused'] and f'rank 1 has {N_TRAIN - 1} training' in r['refused']


# --- a user's own DataBlock: the callback adds the item index, DistributedDL keeps it a dataset position -------------

USER_SCRIPT = textwrap.dedent(r'''
    import os, sys, warnings
    warnings.filterwarnings('ignore')
    import numpy as np, pandas as pd, torch
    import torch.distributed as dist
    from PIL import Image
    from fastai.vision.all import (DataBlock, ImageBlock, MultiCategoryBlock, PILImageBW, ColReader, ColSplitter, Learner,
                                   Normalize, set_seed, rank_distrib)
    import fastai.distributed  # noqa: F401  (distrib_ctx)
    from cxr_noisy_lt.learner import MaskedBCEWithLogits, distributed_setup
    from cxr_noisy_lt.nvum import NVUMCallback, NVUMMemory

    torch.set_num_threads(1)
    out, n_train, n_valid, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rank = rank_distrib()
    rng = np.random.default_rng(0)                        # the same files and rows on both ranks
    classes = ['Atelectasis', 'Effusion', 'No Finding']
    rows = []
    for i in range(n_train + n_valid):
        fn = os.path.join(out, f'r{rank}_{i}.png')
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(fn)
        rows.append(dict(path=fn, findings=['Atelectasis', 'Effusion', 'Atelectasis|Effusion', 'No Finding'][i % 4],
                         is_valid=i >= n_train))
    df = pd.DataFrame(rows)
    db = DataBlock(blocks=(ImageBlock(PILImageBW), MultiCategoryBlock(vocab=classes)), get_x=ColReader('path'),
                   get_y=ColReader('findings', label_delim='|'), splitter=ColSplitter('is_valid'), batch_tfms=Normalize.from_stats(0.5, 0.25))
    dls = db.dataloaders(df, bs=7, drop_last=False, num_workers=0, device='cpu')
    user_train = dls.train

    writes, _update, EPOCH = [], NVUMMemory.update, [0]
    def update(self, idx, z):
        writes.extend((EPOCH[0], int(i)) for i in torch.as_tensor(idx).tolist())
        return _update(self, idx, z)
    NVUMMemory.update = update
    class Epoch(fastai.callback.core.Callback):
        order = -20
        def before_fit(self): distributed_setup(self.learn)    # gloo on a CPU: the device-aware broadcast (cxr_learner's own)
        def before_epoch(self): EPOCH[0] = self.epoch
        def before_batch(self):
            if self.training: assert len(self.learn.yb) == 1          # the loss sees the user's (image, target)

    set_seed(rank)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3))
    learn = Learner(dls, net, loss_func=MaskedBCEWithLogits(), cbs=[NVUMCallback(), Epoch()], path=out)
    with learn.no_bar(), learn.distrib_ctx(sync_bn=False, cpu=True): learn.fit(epochs, 1e-2)
    res = dict(memory=learn.nvum.memory.memory.clone(), writes=writes, restored=learn.dls.train is user_train)
    torch.save(res, os.path.join(out, f'rank{rank}.pt'))
    dist.barrier()
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_user_datablock_one_memory_bank(tmp_path):
    "Every training image written once per epoch (the padding duplicate not again), by its position in the dataset; one bank; the user's loader back."
    r0, r1 = _torchrun(tmp_path, USER_SCRIPT, N_TRAIN, N_VALID, EPOCHS)
    assert r0['memory'].abs().sum() > 0
    fct.test_eq(r0['memory'], r1['memory'])
    for r in (r0, r1):
        for e in range(EPOCHS): fct.test_eq(sorted(i for ep, i in r['writes'] if ep == e), list(range(N_TRAIN)))
        fct.test_eq(r['restored'], True)
