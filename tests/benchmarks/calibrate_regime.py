"""Calibrate a benchmark profile's training regime with BCE alone, before any method runs on it.

    python tests/benchmarks/calibrate_regime.py --profile full --workers 2 [--seeds 0] [--out DIR] [--epochs 30 ...]

Runs `cxr_bench`'s own code (`bench.BenchRunner`) with the baseline only, on every noise setting of the
profile, and checks the regime against what a benchmark of noise-robust and long-tail methods needs:

- clean labels: clean-test mAUC >= 0.80 with the model of the best noisy-validation epoch;
- every noisy setting (the quick profile: only the first point): BCE at least 0.05 lower (the noise hurts), the share of flipped training labels
  fitted rises above 50% (memorisation; for NIH-like noise also the share of added positives, since
  missed positives are "fitted" by a network that predicts negative) and the clean-validation mAUC falls from its peak by at least
  0.03 by the last epoch;
- every class has at least 50 clean positives in the test split.

It prints one row per (noise, seed) and the checks, and writes the run folder (`results.csv`,
`curves.csv`, `run.json`) to --out, from which the bench notebook shows the calibration.
"""
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))      # run from a checkout without installing
import numpy as np, pandas as pd

TARGETS = dict(clean_mauc=0.80, noise_gap=0.05, flipped_fitted=0.5, valid_drop=0.03, test_pos=50)

def calibration_table(res:pd.DataFrame, curves:pd.DataFrame) -> pd.DataFrame:
    "One row per (noise, seed): test mAUC at the best and last epoch, the validation peak and drop, memorisation."
    from cxr_noisy_lt.report import run_means
    means = {s: run_means(res, s) for s in ('best', 'last')}
    rows = []
    for (nz, seed), c in curves.groupby(['noise', 'seed'], sort=False):
        c = c.sort_values('epoch')
        def sel(s):
            m = means[s]
            return m.loc[(m['labels'] == 'clean') & (m['noise'] == nz) & (m['seed'] == seed), 'mAUC'].item()
        best_ep = int(res[(res['noise'] == nz) & (res['seed'] == seed) & (res['select'] == 'best')]['epoch'].iloc[0])
        peak = c['valid_clean_mAUC'].max()
        rows.append({'noise': nz, 'seed': seed, 'test_mAUC_best': sel('best'), 'best_epoch': best_ep,
                     'test_mAUC_last': sel('last'), 'epochs': int(c['epoch'].max()),
                     'valid_clean_peak': peak, 'peak_epoch': int(c.loc[c['valid_clean_mAUC'].idxmax(), 'epoch']),
                     'valid_clean_drop': peak - c['valid_clean_mAUC'].iloc[-1],
                     'flipped_fitted_max': c['flipped_fitted'].max(), 'added_fitted_max': c.get('added_fitted', pd.Series([np.nan])).max(),
                     'first_epoch_over_half': (int(c.loc[c['flipped_fitted'] > .5, 'epoch'].min())
                                               if (c['flipped_fitted'] > .5).any() else None)})
    return pd.DataFrame(rows)

def checks(tab:pd.DataFrame, res:pd.DataFrame, memorisation:bool=True) -> list:
    "(what, value, target, passed) for every target (the memorisation targets only with `memorisation`)."
    out = []
    clean = tab[tab['noise'] == 'none']
    for _, r in clean.iterrows():
        out.append((f"clean labels, seed {r['seed']}: clean-test mAUC (best noisy-valid epoch)", r['test_mAUC_best'], f">= {TARGETS['clean_mauc']}",
                    r['test_mAUC_best'] >= TARGETS['clean_mauc']))
    for _, r in tab[tab['noise'] != 'none'].iterrows():
        base = clean.loc[clean['seed'] == r['seed'], 'test_mAUC_best']
        if len(base):
            gap = base.item() - r['test_mAUC_best']
            out.append((f"{r['noise']}, seed {r['seed']}: drop from clean labels", gap, f">= {TARGETS['noise_gap']}", gap >= TARGETS['noise_gap']))
        if not memorisation: continue
        out.append((f"{r['noise']}, seed {r['seed']}: max share of flipped labels fitted", r['flipped_fitted_max'],
                    f"> {TARGETS['flipped_fitted']}", r['flipped_fitted_max'] > TARGETS['flipped_fitted']))
        if r['noise'].startswith('nih-like'):      # missed positives are "fitted" from the start: the added ones must be too
            out.append((f"{r['noise']}, seed {r['seed']}: max share of added positives fitted", r['added_fitted_max'],
                        f"> {TARGETS['flipped_fitted']}", r['added_fitted_max'] > TARGETS['flipped_fitted']))
        out.append((f"{r['noise']}, seed {r['seed']}: clean-validation drop from peak by the last epoch", r['valid_clean_drop'],
                    f">= {TARGETS['valid_drop']}", r['valid_clean_drop'] >= TARGETS['valid_drop']))
    pos = res[(res['labels'] == 'clean')].groupby('class')['n_test_pos'].min()
    out.append((f"fewest clean test positives ({pos.idxmin()})", float(pos.min()), f">= {TARGETS['test_pos']}", pos.min() >= TARGETS['test_pos']))
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--profile', default='full'); ap.add_argument('--seeds', default='0')
    ap.add_argument('--workers', type=int, default=2); ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--out', default=None); ap.add_argument('--resume', action='store_true')
    for k, t in [('epochs', int), ('n', int), ('lr', float), ('bs', int), ('schedule', str), ('arch', str)]:
        ap.add_argument(f'--{k}', type=t, default=None)
    a = ap.parse_args()
    from cxr_noisy_lt.bench import profile, BenchRunner
    p = profile(a.profile, seeds=[int(s) for s in a.seeds.split(',')], epochs=a.epochs, n=a.n, lr=a.lr, bs=a.bs,
                schedule=a.schedule, arch=a.arch)
    out = a.out or f"calibration_{a.profile}"
    r = p['regime']
    print(f"profile {a.profile}: BCE only; {r.arch}, {r.size} px, n={r.n} (splits {r.splits}), {r.epochs} epochs, "
          f"{r.schedule} lr {r.lr:g}, batch {r.bs}, augmentation {r.aug}; noise {', '.join(p['noise'])}; seeds {a.seeds}", flush=True)
    t0 = time.time()
    runner = BenchRunner(('bce',), p['noise'], p['seeds'], r, out=out, workers=a.workers, threads=a.threads, resume=a.resume)
    res = runner.run()
    wall = time.time() - t0
    tab = calibration_table(res, runner.curves)
    tab.to_csv(Path(out) / 'calibration.csv', index=False)
    print(tab.round(3).to_string(index=False))
    ok = True
    for what, v, target, passed in checks(tab, res, memorisation=a.profile != 'quick'):
        print(f"{'PASS' if passed else 'FAIL'}  {what}: {v:.3f} (target {target})"); ok &= bool(passed)
    secs = json.loads((Path(out) / 'run.json').read_text())['seconds']
    print(f"wall {wall:.0f} s with {a.workers} workers; seconds per run: " + ', '.join(f"{k}: {v:.0f}" for k, v in secs.items()))
    print('all targets met' if ok else 'some targets missed')

if __name__ == '__main__': main()
