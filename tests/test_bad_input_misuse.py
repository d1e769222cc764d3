"""Bad input and misuse: the cases the package must answer with a clear message (naming the file, column, class,
patient or setting at fault, and changing nothing), and where each is tested. `this file` is
tests/test_bad_input_misuse.py; `bad_input_data` is tests/test_bad_input_data.py, and so on.

Labels
- label outside {0, 1, NaN} in a dataset file -> bad_input_data::test_label_outside_01,
  datasets_errors::test_chexpert_bad_label_value; NIH's Google relabels not YES/NO -> bad_input_data::test_google_relabel_not_yes_no
- label outside {0, 1, NaN} in a labels frame -> data_errors::test_bad_label_value; at scoring time (and non-finite
  scores) -> this file::test_scores_with_bad_labels_or_scores
- an all-NaN class column -> bad_input_data::test_all_nan_class_column (warning naming the column and file; NaN AUROC,
  left out of the macro row); NVUM's prior of such a class -> this file::test_all_nan_training_column
- a validation class with no positive: NaN, one warning naming it, skipped by the mean and the summaries
  -> this file::test_validation_class_without_positive
- an unknown class or label space -> data_errors::test_unknown_class; an unknown NIH finding -> datasets_errors::test_nih_unknown_finding
- class count mismatch between data and model -> this file::test_model_with_other_class_count_refused (timm model, at
  construction), ::test_model_with_other_class_count_stopped_at_first_batch (other models, loss and predict_split),
  ::test_nvum_prior_with_other_class_count, ::test_label_columns_or_names_of_other_count
Images
- an image of another mode or bit depth -> bad_input_data::test_image_modes_are_converted,
  ::test_image_mode_without_grayscale (datasets' reader); this file::test_read_image_modes_and_depths (cxr_dls' reader)
- a corrupt image: error naming the file, or skip-and-count when asked -> datasets_errors::test_corrupt_image,
  datasets_cache::test_bad_image_raise_or_skip, bad_input_data::test_image_mode_without_grayscale;
  cxr_dls' reader -> this file::test_unreadable_image_named
- a missing image or folder -> datasets_errors::test_missing_image, ::test_missing_folder, ::test_folder_without_images,
  ::test_mimic_without_files_folder; data_errors::test_missing_image_file; an image index outside the array -> data_errors::test_bad_image_reference
Datasets
- an empty dataset -> data_errors::test_empty_split; this file::test_empty_frame; bad_input_data::test_no_image_left_after_views,
  ::test_no_image_left_without_labels, ::test_no_image_left_after_skipping, ::test_empty_protocol_test_set;
  datasets_cache::test_bad_arguments (empty frame); phantom_cache::test_bad_input (n=0)
- a patient in two splits -> data_errors::test_patient_in_two_splits, bad_input_data::test_patient_across_nih_lists,
  ::test_patient_across_mimic_splits
- metadata files: missing column -> datasets_errors::test_csv_missing_column; unreadable -> ::test_unreadable_csv,
  ::test_openi_bad_reports, ::test_npz_not_a_zip; inconsistent lists or splits -> ::test_nih_list_inconsistent,
  ::test_mimic_split_file, ::test_padchest_bad_method; .npz keys and shapes -> ::test_npz_wrong_keys, ::test_npz_wrong_shapes;
  failed download -> ::test_chestmnist_missing_file_and_failed_download; unknown view -> ::test_unknown_view;
  bad arguments -> ::test_on_error_value, ::test_bad_split_arguments, bad_input_data::test_protocol_bad_arguments
Caches
- a truncated or damaged cache -> phantom_cache::test_truncated_rebuilds, ::test_truncated_raises,
  ::test_missing_header_is_an_interrupted_build, ::test_missing_side_file, ::test_unreadable_header,
  ::test_corrupted_side_file_fails_crc, ::test_corrupted_images_need_verify; datasets_cache::test_damaged_cache_is_detected_and_rebuilt,
  ::test_verify_catches_corruption, ::test_pool_error_names_file_and_resumes; bad_input_data::test_damaged_cache_says_how_to_rebuild,
  ::test_chestmnist_damaged_memmap
- a stale cache (other version, code or parameters) -> phantom_cache::test_stale_version, ::test_other_drawing_code_is_stale,
  ::test_header_with_other_parameters; datasets_cache::test_stale_cache
Training
- DataLoaders without item indices given to NVUM (or to cxr_learner) -> this file::test_nvum_without_item_index;
  an item index that is not a position -> this file::test_nvum_item_index_not_a_position; a loader that cannot
  give the index, boxes missing or not found for coarse-to-fine -> user_pipeline::test_loader_that_cannot_give_the_index_says_how,
  ::test_coarse_to_fine_without_boxes_says_how
- a checkpoint from another configuration (classes, training set, method, interrupted fit) -> resume::test_other_classes_refused,
  ::test_other_training_set_refused, ::test_other_method_refused, ::test_resume_needs_the_interrupted_fit;
  nvum_checkpoint::test_memory_size_mismatch_is_explained, ::test_plain_checkpoint_then_nvum
- a distributed run whose ranks disagree on the dataset length -> distributed::test_ranks_with_different_data_refused
  (two processes); this file::test_ranks_disagree_on_lengths (the message, in one process)
cxr_bench
- an unknown method or hyperparameter -> cli::test_bad_arguments_name_the_culprit, ::test_method_hyperparameters_in_the_name;
  this file::test_unknown_method (in process: nothing written)
- other bad settings (noise, size, profile, regime) -> cli::test_bad_arguments_name_the_culprit; this file::test_bad_bench_settings
- a results folder from another configuration (resume or refuse, never mix; unreadable or missing config.json)
  -> this file::test_folder_of_another_configuration_refused, ::test_folder_without_readable_configuration
Determinism (see the Reproducibility section of nbs/30_bench.ipynb)
- the same seed gives the same CPU training curve -> this file::test_cpu_training_curve_deterministic,
  cli::test_workers_match_one_process; DataLoader workers change nothing -> this file::test_loader_workers_do_not_change_batches
"""
import json, sys, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
import fastcore.test as fct
from fastai.data.core import DataLoaders
from fastai.learner import Learner
import fastai.callback.progress  # noqa: F401  (learn.no_bar)

from cxr_noisy_lt.data import toy_cxr, cxr_dls, read_image, CXRDataset
from cxr_noisy_lt.labels import NIH14
from cxr_noisy_lt.learner import cxr_learner, cxr_model, predict_split, MaskedBCEWithLogits, check_same_data
from cxr_noisy_lt import learner as learner_mod
from cxr_noisy_lt.metrics import MeanAUC, metric_summary, per_class_auc, per_class_ap, macro
from cxr_noisy_lt.nvum import NVUMCallback
from cxr_noisy_lt import bench
from cxr_noisy_lt.bench import BenchRunner, Regime, get_method, parse_method, parse_noise, profile, run_bench

torch.set_num_threads(1)
CLS = list(NIH14[:4])                     # Atelectasis, Cardiomegaly, Effusion, Infiltration


@pytest.fixture(scope='module')
def toy():
    return toy_cxr(n=120, size=16, classes=CLS, seed=0)


def dls_of(frame, images, **kw):
    return cxr_dls(frame, CLS, images, **(dict(bs=16, seed=0, aug=False, device='cpu') | kw))


def fit(learn, n=1):
    with learn.no_bar(), learn.no_logging(): learn.fit(n, 1e-2)


class Net(nn.Module):
    "A model that does not say how many outputs it has (no timm classifier, no `num_classes`)."
    def __init__(self, c=4):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, c)
    def forward(self, x): return self.fc(F.relu(self.conv(x)).mean((2, 3)))




# --- DataLoaders without item indices given to NVUM ----------------------------------------------------------------

class Pairs(torch.utils.data.Dataset):
    "(image, target) items: no item index. `shift` turns the index of (image, target, idx) items into a wrong one."
    def __init__(self, n=40, with_idx=False, shift=0):
        g = torch.Generator().manual_seed(0)
        self.x, self.labels = torch.randn(n, 1, 16, 16, generator=g), (torch.rand(n, 4, generator=g) < .4).float()
        self.with_idx, self.shift = with_idx, shift
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        return (self.x[i], self.labels[i], i + self.shift) if self.with_idx else (self.x[i], self.labels[i])


def pair_learner(ds, cbs):
    dls = DataLoaders.from_dsets(ds, Pairs(16), bs=8, device='cpu')
    dls.n_inp = 1
    return Learner(dls, Net(), loss_func=MaskedBCEWithLogits(), cbs=cbs)


def test_nvum_without_item_index():
    "The loader adds the index for the fit: the memory is written at the 40 positions, the user's loader is back."
    learn = pair_learner(Pairs(), NVUMCallback())
    plain = learn.dls.train
    fit(learn)
    fct.test_eq(int((learn.nvum.memory.memory.abs().sum(1) > 0).sum()), 40)
    fct.test_eq(learn.dls.train is plain, True)
    # cxr_learner says what DataLoaders it needs before building anything
    dls = DataLoaders.from_dsets(Pairs(), Pairs(16), bs=8, device='cpu')
    with pytest.raises(ValueError, match=r"cxr_learner needs DataLoaders that name their classes \(`dls.classes`, or the "
                                         r"`dls.vocab` of a DataBlock's MultiCategoryBlock\): set dls.classes = \[...\] or use cxr_dls"):
        cxr_learner(dls, 'narrow_resnet10')


def test_nvum_item_index_not_a_position():
    "A third element of the dataset's items (here the position shifted by 100) is the user's: the memory is indexed by the loader's own positions."
    learn = pair_learner(Pairs(with_idx=True, shift=100), NVUMCallback())
    fit(learn)
    fct.test_eq(int((learn.nvum.memory.memory.abs().sum(1) > 0).sum()), 40)
    with pytest.raises(IndexError, match=r"NVUMMemory: item index 1\d\d outside \[0, 40\); the memory must have one row per "
                                         r"training item"):
        learn.nvum.memory.update(torch.arange(100, 108), torch.zeros(8, 4))


# --- class count mismatch between data and model --------------------------------------------------------------------

def test_model_with_other_class_count_refused(toy):
    dls = dls_of(*toy)
    with pytest.raises(ValueError) as e: cxr_learner(dls, cxr_model('narrow_resnet10', 5))
    fct.test_eq(str(e.value), f"cxr_learner: the model has 5 outputs but the data has 4 classes {CLS}; build it with one "
                              f"output per class, e.g. cxr_model(arch, n_out=4)")
    fct.test_eq(cxr_learner(dls, cxr_model('narrow_resnet10', 4), metrics=[]).model.num_classes, 4)   # the right count passes


def test_model_with_other_class_count_stopped_at_first_batch(toy):
    "A model that does not say its output count: the loss stops the fit at the first batch; predict_split checks too."
    frame, images = toy
    dls = dls_of(frame, images)
    learn = cxr_learner(dls, Net(5), metrics=[])
    w0 = learn.model.fc.weight.detach().clone()
    with pytest.raises(ValueError) as e: fit(learn)
    assert str(e.value).startswith("MaskedBCEWithLogits: the model gives 5 outputs per image but the target has 4 classes "
                                   "(logits (16, 5), target (16, 4))"), str(e.value)
    fct.test_eq(learn.model.fc.weight, w0)                                   # no step was taken
    good = cxr_learner(dls, Net(4), metrics=[])
    with pytest.raises(ValueError, match=r"predict_split: the model gives 5 outputs per image but the data has 4 classes "
                                         r"\['Atelectasis', 'Cardiomegaly', 'Effusion', 'Infiltration'\]"):
        predict_split(good, frame, 'test', model=Net(5))
    fct.test_eq(predict_split(good, frame, 'test')[0].shape, ((frame['split'] == 'test').sum(), 4))


def test_nvum_prior_with_other_class_count(toy):
    learn = cxr_learner(dls_of(*toy), 'narrow_resnet10', metrics=[], cbs=NVUMCallback(prior=[.3, .2, .1]))
    with pytest.raises(ValueError, match='NVUMCallback: the model has 4 outputs but the prior has 3 classes'): fit(learn)


def test_label_columns_or_names_of_other_count(toy):
    frame, images = toy
    with pytest.raises(ValueError, match="label_cols has 3 columns but the label space 'custom' has 4 classes"):
        cxr_dls(frame, CLS, images, label_cols=CLS[:3])
    y, s = frame[CLS].to_numpy(float), np.random.default_rng(0).random((len(frame), 4))
    with pytest.raises(ValueError, match='3 class names for 4 score columns'): per_class_auc(y, s, CLS[:3])
    with pytest.raises(ValueError, match=r'y_true has shape \(120, 4\) but y_score has shape \(120, 3\)'): per_class_ap(y, s[:, :3])


# --- labels outside {0, 1, NaN} at scoring time ----------------------------------------------------------------------

def test_scores_with_bad_labels_or_scores():
    y = np.array([[0, 1.], [1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"y_true: class 1 \('Hernia'\) has 1 label\(s\) outside \{0, 1, NaN\}, e.g. \[-1.0\]"):
        per_class_auc(np.where(np.arange(6).reshape(3, 2) == 5, -1., y), np.zeros((3, 2)), ['Edema', 'Hernia'])
    with pytest.raises(ValueError, match=r"y_score: class 0 \('Edema'\) has 1 non-finite score\(s\)"):
        metric_summary(y, np.array([[np.inf, 0], [0, 0], [0, 0]]), ['Edema', 'Hernia'])


# --- a validation class with no positive -----------------------------------------------------------------------------

def test_validation_class_without_positive(toy):
    frame, images = toy
    f = frame.copy()
    f.loc[f['split'] == 'valid', 'Effusion'] = 0.                             # no positive left in validation
    learn = cxr_learner(dls_of(f, images), 'narrow_resnet10')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        fit(learn, 2)
    notes = [str(x.message) for x in w if 'validation class' in str(x.message)]
    fct.test_eq(notes, ["MeanAUC: 1 validation class(es) have no positive or no negative among their known labels: "
                        "['Effusion']; their value is NaN (see .per_class) and the mean is over the other 3 class(es)"])
    m = learn.metrics[0]
    fct.test_eq((np.isnan(m.per_class).tolist(), m.n_defined), ([False, False, True, False], 3))
    fct.test_close(learn.recorder.values[-1][-1], np.nanmean(m.per_class), eps=1e-9)   # the mean skips it, not NaN
    # the summaries skip it as well: NaN row, left out of the macro row, which counts the defined classes
    probs, targs, _ = predict_split(learn, f, 'valid')
    ms = metric_summary(targs, probs, CLS).set_index('class')
    assert np.isnan(ms.loc['Effusion', 'auc']) and np.isnan(ms.loc['Effusion', 'ap'])
    fct.test_eq((int(ms.loc['Effusion', 'n_pos']), int(ms.loc['macro', 'n_pos']), int(ms.loc['macro', 'n_neg'])), (0, 3, 1))
    fct.test_close(ms.loc['macro', 'auc'], ms.loc[['Atelectasis', 'Cardiomegaly', 'Infiltration'], 'auc'].mean(), eps=1e-12)


# --- an all-NaN target column ----------------------------------------------------------------------------------------

def test_all_nan_training_column(toy):
    frame, images = toy
    f = frame.assign(Effusion=np.nan)
    dls = dls_of(f, images)
    with pytest.raises(ValueError) as e: cxr_learner(dls, 'narrow_resnet10', cbs=NVUMCallback())
    fct.test_eq(str(e.value), "nvum_prior: column 2 ('Effusion') has no labelled entry; its prior is undefined (pass the "
                              "prior, e.g. NVUMCallback(prior=...), or leave the class out)")
    cxr_learner(dls, 'narrow_resnet10', cbs=NVUMCallback(prior=[.3, .3, .3, .3]))        # a given prior is taken
    # the masked loss trains on the other classes: the Effusion logit gets no gradient
    learn = cxr_learner(dls, Net(4), metrics=[])
    x, y, _ = dls.one_batch()
    MaskedBCEWithLogits()(learn.model(x), y).backward()
    g = learn.model.fc.weight.grad
    fct.test_eq((bool(g[2].abs().sum() == 0), bool(g[[0, 1, 3]].abs().sum() > 0)), (True, True))


# --- images: other modes and bit depths, files that cannot be read ---------------------------------------------------

def test_read_image_modes_and_depths(tmp_path):
    g = np.tile(np.arange(0, 240, 15, dtype=np.uint8), (16, 1))
    Image.fromarray(g).convert('RGB').save(tmp_path / 'rgb.png')
    Image.fromarray(g).convert('RGBA').save(tmp_path / 'rgba.png')
    Image.fromarray(g.astype(np.uint16) * 16 + 100).save(tmp_path / 'g16.png')            # 12 bits used, offset
    Image.fromarray(g > 100).save(tmp_path / 'bw.png')                                    # 1 bit
    for name in ('rgb.png', 'rgba.png'): fct.test_eq(read_image(tmp_path / name, 16), g)   # gray content kept exactly
    a16 = read_image(tmp_path / 'g16.png', 16)
    fct.test_eq((a16.dtype, int(a16.min()), int(a16.max())), (np.uint8, 0, 255))          # stretched from its own range
    fct.test_eq(np.unique(read_image(tmp_path / 'bw.png', 16)).tolist(), [0, 255])


def _cut(p): p.write_bytes(p.read_bytes()[:60])
def _text(p): p.write_text('not an image')
def _lab(p): Image.new('RGB', (16, 16)).convert('LAB').save(p, format='TIFF')
def _nan(p): Image.fromarray(np.full((16, 16), np.nan, np.float32)).save(p, format='TIFF')

@pytest.mark.parametrize('damage,why', [(_cut, 'image file is truncated'), (_text, 'cannot identify image file'),
                                        (_lab, 'cannot convert a LAB image to grayscale'),
                                        (_nan, 'the F image has non-finite pixel values')])
def test_unreadable_image_named(toy, tmp_path, damage, why):
    frame, images = toy
    f = frame.copy()
    for i in f.index: Image.fromarray(images[i]).save(tmp_path / f"{i}.png")
    f['image'] = [f"{i}.png" for i in f.index]
    victim = tmp_path / '7.png'
    damage(victim)
    with pytest.raises(OSError) as e: read_image(victim, 16)
    assert str(e.value).startswith(f"{victim}: cannot read the image: ") and why in str(e.value), str(e.value)
    ds = CXRDataset(f, CLS, path=tmp_path, size=16)                             # the files exist: built
    with pytest.raises(OSError, match=f"{victim}: cannot read the image"): ds[7]   # reading the item names the file
    fct.test_eq(ds[6][0].shape, (1, 16, 16))


# --- an empty dataset ------------------------------------------------------------------------------------------------

def test_empty_frame(toy):
    frame, images = toy
    with pytest.raises(ValueError, match=r"cxr_dls: split 'train' is empty; the frame's splits are \{\}"):
        cxr_dls(frame.iloc[:0], CLS, images)
    only_test = frame[frame['split'] == 'test']
    with pytest.raises(ValueError, match=rf"cxr_dls: split 'train' is empty; the frame's splits are \{{'test': {len(only_test)}\}}"):
        cxr_dls(only_test, CLS, images)


# --- cxr_bench: unknown method and other bad settings, in process ----------------------------------------------------

def test_unknown_method(tmp_path):
    with pytest.raises(KeyError) as e: BenchRunner(methods=('bce', 'magic'))
    assert str(e.value.args[0]).startswith("unknown method 'magic'; available: ['bce', 'nvum'"), e.value.args[0]
    with pytest.raises(ValueError, match=r"method 'nvum@nonsense=1': .*nonsense"): get_method('nvum@nonsense=1')
    with pytest.raises(ValueError, match=r"hyperparameters are written key=value, separated by commas; got '3'"):
        parse_method('nvum@3')
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as e: bench.main(methods='bce,magic', out=str(out))
    assert str(e.value.code).startswith("cxr_bench: error: unknown method 'magic'; available:"), e.value.code
    assert not out.exists()                                                     # nothing written


@pytest.mark.parametrize('make,msg', [
    (lambda: Regime(epochs=0), 'epochs=0: expected a positive integer'),
    (lambda: Regime(schedule='cosine'), "schedule='cosine': use one of ('constant', 'flat_cos', 'one_cycle')"),
    (lambda: Regime(amp='fp8'), "amp='fp8': use 'auto', 'bf16', 'fp16' or 'none'"),
    (lambda: parse_noise('gauss:0.1'), "unknown noise setting 'gauss:0.1': the model must be one of"),
    (lambda: parse_noise('symmetric:0.x'), "noise setting 'symmetric:0.x': rate '0.x' is not a number"),
    (lambda: profile('huge'), "unknown profile 'huge'"),
    (lambda: profile('quick', colour='red'), "unknown setting 'colour'")])
def test_bad_bench_settings(make, msg):
    with pytest.raises((KeyError, ValueError)) as e: make()
    assert msg in str(e.value.args[0]), e.value.args[0]


# --- a results folder from another configuration --------------------------------------------------------------------

TINY = dict(n=200, size=32, epochs=2, bs=16, splits=(0.5, 0.2, 0.3))

@pytest.fixture
def folder(tmp_path, monkeypatch):
    "A results folder holding one saved run of TINY (its files are stand-ins: they are never read here)."
    monkeypatch.setenv('CXR_NOISY_LT_CACHE', str(tmp_path / 'cache'))
    out = tmp_path / 'res'
    (out / 'runs').mkdir(parents=True)
    (out / 'runs' / 'config.json').write_text(json.dumps(BenchRunner(**TINY).config(), indent=1))   # as a runner writes it
    for s in ('.csv', '.curves.csv', '.boot.npz'): (out / 'runs' / f'bce__none__seed0{s}').write_text('saved')
    return out


def test_folder_of_another_configuration_refused(folder, snapshot):
    before = snapshot(folder)
    kw = dict(methods=('bce',), noise=('none',), out=folder, **(TINY | dict(epochs=3)))
    with pytest.raises(ValueError) as e: run_bench(**kw, resume=True)
    fct.test_eq(str(e.value), f"cannot resume in {folder}: its runs used another configuration: epochs=2 (now 3); resume "
                              f"with its settings, or pass another out folder")
    with pytest.raises(ValueError) as e: run_bench(**kw)                        # without resume: refused too, not mixed
    fct.test_eq(str(e.value), f"{folder} holds 1 saved run(s) of another configuration (epochs=2 (now 3)); running this one "
                              f"there would mix the two: pass another out folder, or delete {folder / 'runs'} to start afresh")
    with pytest.raises(SystemExit, match='holds 1 saved run'):
        bench.main(methods='bce', noise='none', seeds='0', n=200, size=32, epochs=3, bs=16, splits='0.5,0.2,0.3',
                   out=str(folder), device='cpu')
    fct.test_eq(snapshot(folder), before)                                      # nothing changed
    # the same configuration is accepted (here: reported, and nothing of this grid is saved)
    with pytest.raises(ValueError, match='report_only: none of the 1 runs of this grid is saved'):
        run_bench(**(kw | dict(epochs=2, seeds=(1,))), report_only=True)
    # another configuration in a folder without saved runs is no mix: taken
    for f in (folder / 'runs').glob('bce__*'): f.unlink()
    r = BenchRunner(**kw)
    r._check_folder(resume=False)
    fct.test_eq(json.loads((folder / 'runs' / 'config.json').read_text())['epochs'], 3)


def test_folder_without_readable_configuration(folder, snapshot):
    cfg = folder / 'runs' / 'config.json'
    cfg.write_text('{"n": 200, ')                                               # cut short
    before = snapshot(folder)
    kw = dict(methods=('bce',), noise=('none',), out=folder, **TINY)
    with pytest.raises(ValueError) as e: run_bench(**kw, resume=True)
    msg = str(e.value)
    assert msg.startswith(f"{cfg} is unreadable (") and f"cannot tell which configuration the 1 saved run(s) in {folder / 'runs'} used" in msg, msg
    cfg.unlink()
    before = snapshot(folder)
    for resume in (True, False):
        with pytest.raises(ValueError, match=rf"holds 1 saved run\(s\) but no config.json saying which configuration they used"):
            run_bench(**kw, resume=resume)
    fct.test_eq(snapshot(folder), before)


# --- a distributed run whose ranks disagree on the dataset length ----------------------------------------------------

def test_ranks_disagree_on_lengths(toy, monkeypatch):
    "The check itself, with the gathered lengths of two ranks stubbed (tests/test_distributed.py runs two real processes)."
    dls = dls_of(*toy)
    n_tr, n_va = len(dls.train_ds), len(dls.valid_ds)
    seen = []
    def gather(ranks):
        def _g(x):
            seen.append(x.tolist())
            return torch.tensor(ranks, dtype=torch.long)
        return _g
    home = sys.modules[check_same_data.__module__]                             # the module whose all_gather_cat it calls
    monkeypatch.setattr(home, 'all_gather_cat', gather([[n_tr, n_va], [n_tr, n_va]]))
    check_same_data(dls)                                                       # agreeing ranks pass
    fct.test_eq(seen, [[[n_tr, n_va]]])                                        # each rank sends its own lengths
    monkeypatch.setattr(home, 'all_gather_cat', gather([[n_tr, n_va], [n_tr - 1, n_va]]))
    with pytest.raises(ValueError) as e: check_same_data(dls)
    fct.test_eq(str(e.value), f"distributed training: the ranks disagree on the dataset lengths (rank 0 has {n_tr} training and "
                              f"{n_va} validation items, rank 1 has {n_tr - 1} training and {n_va} validation items); every "
                              f"rank must load the same data")


# --- determinism on the CPU ------------------------------------------------------------------------------------------

def test_cpu_training_curve_deterministic():
    """The same seed gives the same curves and test predictions, to the bit, on the CPU with the same number of threads
    (this test: one); another seed gives other ones. Two tiny epochs of the benchmark's BCE run."""
    from cxr_noisy_lt.phantom import make_phantom
    from cxr_noisy_lt.bench import run_one, noisy_frame
    ph = make_phantom(n=200, size=32, seed=0, splits=TINY['splits'], progress=False, cache_dir=False)
    fr = noisy_frame(ph, 'symmetric:0.2', 0)
    reg = Regime(**TINY, device='cpu')
    def run(seed):
        o = run_one(get_method('bce'), fr, ph.images, ph.classes, reg, seed=seed)
        return o.curves.drop(columns=['train_seconds', 'eval_seconds']), o.probs
    (c1, p1), (c2, p2), (c3, p3) = run(0), run(0), run(1)
    fct.test_eq(len(c1), 2)
    pd.testing.assert_frame_equal(c1, c2, check_exact=True)
    fct.test_eq(sorted(p1), sorted(p2))
    for k in p1: fct.test_eq(p1[k].tobytes(), p2[k].tobytes())
    assert not c1['train_loss'].equals(c3['train_loss'])                       # the seed matters
    assert not np.array_equal(p1[('bce', 'last')], p3[('bce', 'last')])


def test_loader_workers_do_not_change_batches(toy):
    "Batch order and augmented pixels over two epochs are the same with DataLoader workers as without."
    from fastai.torch_core import set_seed
    frame, images = toy
    def batches(workers, seed=0):
        set_seed(seed, reproducible=True)
        dls = cxr_dls(frame, CLS, images, bs=16, seed=seed, aug=True, num_workers=workers, device='cpu')
        return [(i.tolist(), x.double().sum().item()) for _ in range(2) for x, y, i in dls.train]
    a = batches(0)
    fct.test_eq(batches(2), a)
    assert batches(0, seed=1) != a
