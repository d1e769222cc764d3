"""Localisation scores in the benchmark's regime: BCE (coarse-to-fine's stage 1) against random maps, and coarse-to-fine against its own stage 1.

    python tests/benchmarks/localisation.py [--epochs 30] [--images 2000] [--noise nih-like:0.4] [--seed 0]

Trains coarse-to-fine as the `c2f-os8` profile does (the `full` regime on `narrow_resnet10_os8`, whose last
feature map is 8 x 8 at 64 px): stage 1 is BCE on all training images, stage 2 uses the boxes and gaze of 10% of
them. Then scores Grad-CAM maps of the last layer on the first `--images` test images that have a box, per class and
over all (image, class) pairs: pointing game (the map's peak inside the box), IoU of the map above 0.5 with the box,
and the share of the map's energy inside the box; random maps on the same 8 x 8 grid give the chance level.
"""
import argparse, sys, time, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
warnings.filterwarnings('ignore')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--epochs', type=int, default=30); ap.add_argument('--images', type=int, default=2000)
    ap.add_argument('--noise', default='nih-like:0.4'); ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    import pandas as pd, torch
    from cxr_noisy_lt.phantom import make_phantom
    from cxr_noisy_lt.bench import profile, get_method, build_learner, noisy_frame
    from cxr_noisy_lt.data import test_dl
    from cxr_noisy_lt.learner import predict_split
    from cxr_noisy_lt.metrics import per_class_auc, macro
    from cxr_noisy_lt.labels import clean_col
    from cxr_noisy_lt.gradcam import compare_localisation
    t0 = time.time()
    reg = profile('c2f-os8', epochs=a.epochs)['regime']
    ph = make_phantom(n=reg.n, splits=reg.splits, seed=reg.phantom_seed, progress=False)
    frame = noisy_frame(ph, a.noise, seed=a.seed)
    m = get_method('coarse2fine')
    learn = build_learner(m, frame, ph.images, ph.classes, reg, seed=a.seed, phantom=ph)
    with learn.no_bar(), learn.no_logging(): m.fit(learn, reg.epochs, reg.lr)
    net = learn.model
    stage1 = net.stage1_model()
    t_train = time.time() - t0
    test = frame[frame['split'] == 'test']
    boxed = test[test['image'].isin(ph.boxes['image'])].head(a.images)
    dl = test_dl(learn.dls, boxed.assign(split='test'), bs=128)
    y = boxed[[clean_col(c) for c in ph.classes]].to_numpy()
    for name, model in (('stage 1 (BCE)', stage1), ('coarse-to-fine', net)):
        p = predict_split(learn, boxed.assign(split='test'), 'test', model=model, bs=512)[0]
        print(f"{name}: clean mAUC on these {len(boxed)} test images {macro(per_class_auc(y, p)):.3f}")
    t1 = time.time()
    torch.manual_seed(0)
    tab = compare_localisation(stage1, net, dl, ph.boxes, names=('stage 1 (BCE)', 'coarse-to-fine'), seed=a.seed)
    pd.set_option('display.width', 200)
    print(f"\n{a.noise}, seed {a.seed}, {reg.epochs} epochs, {reg.arch}; {len(boxed)} test images with a box; "
          f"Grad-CAM of the last layer, random maps on its grid")
    print(tab.round(3).to_string())
    allr = tab.loc['(all)']
    print('\n(all) pairs: ' + '; '.join(f"{s}: stage 1 {allr[(s, 'stage 1 (BCE)')]:.3f}, coarse-to-fine "
                                          f"{allr[(s, 'coarse-to-fine')]:.3f}, random {allr[(s, 'random')]:.3f}"
                                          for s in ('pointing', 'iou', 'energy')))
    print(f"training {t_train:.0f} s, localisation {time.time() - t1:.0f} s")

if __name__ == '__main__': main()
