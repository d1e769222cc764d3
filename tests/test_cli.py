"The `cxr_bench` command as a user runs it: a tiny grid end to end, and clear errors for bad arguments."
import json, os, subprocess, sys
import numpy as np
import pandas as pd
import pytest

def run(args, tmp_path):
    env = dict(os.environ, CXR_NOISY_LT_CACHE=str(tmp_path / 'cache'), MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    return subprocess.run(['cxr_bench', *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)

def test_tiny_grid_writes_report(tmp_path):
    out = tmp_path / 'res'
    r = run(['--methods', 'bce', '--noise', 'none,symmetric:0.3', '--seeds', '0', '--n', '300', '--size', '32',
             '--epochs', '2', '--bs', '32', '--splits', '0.5,0.2,0.3', '--out', str(out), '--threads', '1', '--save_probs'], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = pd.read_csv(out / 'results.csv')
    assert set(res['noise']) == {'none', 'symmetric:0.3'} and set(res['labels']) == {'clean', 'noisy'}
    assert set(res['select']) == {'best', 'last', 'clean_best'} and res['epoch'].between(1, 2).all()
    curves = pd.read_csv(out / 'curves.csv')
    assert len(curves) == 2 * 2 and {'valid_noisy_mAUC', 'valid_clean_mAUC', 'train_loss', 'flipped_fitted', 'clean_fitted'} <= set(curves)
    assert (out / 'curves_symmetric_0.3.png').exists()
    assert res['class'].nunique() == 14 and set(res['group']) <= {'head', 'medium', 'tail'}
    defined = res['auc'].dropna()
    assert len(defined) > 0 and defined.between(0, 1).all()
    summary = (out / 'summary.md').read_text()
    assert '| method | noise | seeds | mAUC' in summary and '## Class groups' in summary
    assert (out / 'per_class_auc_none.png').stat().st_size > 1000 and (out / 'mauc_vs_noise.png').exists()
    cfg = json.loads((out / 'run.json').read_text())
    assert cfg['config']['n'] == 300 and cfg['methods'] == ['bce']
    assert '| bce | none |' in r.stdout          # the summary table is printed too
    # --save_probs: the test probabilities the results were computed from, read back by the results explorer
    assert sorted(p.name for p in (out / 'runs').glob('*.probs.npz')) == ['bce__none__seed0.probs.npz', 'bce__symmetric-0.3__seed0.probs.npz']
    from cxr_noisy_lt.runfolder import load_bench
    from cxr_noisy_lt.metrics import per_class_auc
    b = load_bench(out)
    assert len(b.probs) == 2 * 3                  # noise settings x (best, last, clean_best)
    rows = res.query("noise == 'symmetric:0.3' and select == 'last' and labels == 'clean'")
    auc = per_class_auc(b.labels('symmetric:0.3', 0, 'clean'), b.probs_for('bce', 'symmetric:0.3', 0, 'last'))
    np.testing.assert_allclose(auc, rows['auc'].to_numpy(), atol=1e-6)

def test_list_methods(tmp_path):
    r = run(['--list_methods'], tmp_path)
    assert r.returncode == 0 and r.stdout.split()[0] == 'bce', r.stdout + r.stderr

@pytest.mark.parametrize('args,msg', [(['--methods', 'bce,magic'], "'magic'"),
                                      (['--noise', 'gauss:0.1'], "'gauss:0.1'"),
                                      (['--noise', 'symmetric:1.5'], 'rate must be in [0, 1)'),
                                      (['--size', '8'], 'size=8')])
def test_bad_arguments_name_the_culprit(tmp_path, args, msg):
    r = run([*args, '--n', '50', '--epochs', '1', '--out', str(tmp_path / 'x')], tmp_path)
    assert r.returncode != 0 and msg in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / 'x' / 'results.csv').exists()

@pytest.mark.slow
def test_workers_match_one_process(tmp_path):
    "Two worker processes give the same numbers as one process: each run is seeded on its own."
    common = ['--methods', 'bce', '--noise', 'none,symmetric:0.3', '--seeds', '0', '--n', '300', '--size', '32',
              '--epochs', '1', '--bs', '32', '--splits', '0.5,0.2,0.3', '--threads', '1']
    r1 = run([*common, '--out', str(tmp_path / 'one')], tmp_path)
    r2 = run([*common, '--out', str(tmp_path / 'two'), '--workers', '2'], tmp_path)
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr + r2.stderr)[-3000:]
    a, b = (pd.read_csv(tmp_path / d / 'results.csv') for d in ('one', 'two'))
    pd.testing.assert_frame_equal(a, b, atol=1e-6)
    ca, cb = (pd.read_csv(tmp_path / d / 'curves.csv').drop(columns=['train_seconds', 'eval_seconds']) for d in ('one', 'two'))
    pd.testing.assert_frame_equal(ca, cb, atol=1e-6)
    assert len(list((tmp_path / 'two' / 'runs').glob('*.curves.csv'))) == 2
    assert json.loads((tmp_path / 'two' / 'run.json').read_text())['workers'] == 2

@pytest.mark.slow
def test_gpu_profile_code_paths_on_cpu(tmp_path):
    "The gpu profile's regime (resnet18, augmentation on the device, one-cycle, autocast asked for) runs end to end, here on the CPU."
    out = tmp_path / 'gpu'
    r = run(['--profile', 'gpu', '--device', 'cpu', '--amp', 'bf16', '--methods', 'bce,nvum', '--noise', 'nih-like:0.4',
             '--n', '300', '--size', '32', '--epochs', '1', '--bs', '16', '--splits', '0.5,0.2,0.3', '--out', str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((out / 'run.json').read_text())['config']
    assert (cfg['arch'], cfg['aug'], cfg['schedule'], cfg['amp'], cfg['device']) == ('resnet18', True, 'one_cycle', 'bf16', 'cpu')
    assert set(pd.read_csv(out / 'results.csv')['method']) == {'bce', 'nvum'}
    assert (out / 'deltas_ci.csv').exists()

def test_method_hyperparameters_in_the_name(tmp_path):
    out = tmp_path / 'hp'
    r = run(['--methods', 'bce,nvum@reg_weight=3', '--noise', 'none', '--n', '300', '--size', '32', '--epochs', '1',
             '--bs', '32', '--splits', '0.5,0.2,0.3', '--out', str(out)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(pd.read_csv(out / 'results.csv')['method']) == {'bce', 'nvum@reg_weight=3'}
    r = run(['--methods', 'nvum@nonsense=1', '--noise', 'none', '--n', '300', '--size', '32', '--epochs', '1',
             '--splits', '0.5,0.2,0.3', '--out', str(tmp_path / 'bad')], tmp_path)
    assert r.returncode != 0 and 'nonsense' in r.stderr, r.stderr[-2000:]

TINY = ['--n', '300', '--size', '32', '--epochs', '2', '--bs', '32', '--splits', '0.5,0.2,0.3', '--threads', '1']

def test_log_lines_when_output_is_not_a_terminal(tmp_path):
    "Where stdout is a file or a pipe (a Slurm log, CI): a line per finished cell and, with --verbose, per epoch; no bar frames."
    import re
    r = run(['--methods', 'bce', '--noise', 'none,symmetric:0.3', '--seeds', '0', *TINY, '--workers', '1', '--verbose',
             '--out', str(tmp_path / 'res')], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '\r' not in r.stdout and '█' not in r.stdout and 'train_loss' not in r.stdout, r.stdout[:2000]   # no bars, no fastai tables
    lines = r.stdout.splitlines()
    assert re.fullmatch(r'\d\d:\d\d:\d\d cxr_bench: 2 of 2 runs to do in this process', lines[0]), lines[0]
    cells = [l for l in lines if re.match(r'\d\d:\d\d:\d\d \[\d/2\] ', l)]
    assert [c[9:].split(' done in ')[0] for c in cells] == ['[1/2] bce | none | 0', '[2/2] bce | symmetric:0.3 | 0'], cells
    assert all(re.search(r'done in \d+ s: clean-test mAUC 0\.\d{3}, best noisy-validation epoch [12]$', c) for c in cells), cells
    epochs = [l for l in lines if ': epoch ' in l]
    assert len(epochs) == 4 and 'flipped labels fitted' in epochs[-1] and 'flipped' not in epochs[0], epochs   # no flips without noise
    assert lines.index(epochs[1]) < lines.index(cells[0]) < lines.index(epochs[2])

def test_progress_bar_in_a_terminal(tmp_path):
    "In a terminal the grid keeps its progress bar and prints no per-cell lines."
    import pty, re
    from cxr_noisy_lt.bench import log_mode
    master, slave = pty.openpty()
    with open(slave, 'w', closefd=False) as tty: assert log_mode('auto', tty) == 'bar'
    with open(tmp_path / 'log.txt', 'w') as f: assert log_mode('auto', f) == 'lines'
    assert (log_mode('lines', None), log_mode('bar', None)) == ('lines', 'bar')
    env = dict(os.environ, CXR_NOISY_LT_CACHE=str(tmp_path / 'cache'), MPLBACKEND='Agg', OMP_NUM_THREADS='1')
    p = subprocess.Popen(['cxr_bench', '--methods', 'bce', '--noise', 'none', '--seeds', '0', *TINY, '--out', str(tmp_path / 'res')],
                         stdout=slave, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    os.close(slave)
    out = b''
    while True:
        try: chunk = os.read(master, 1 << 16)
        except OSError: break                                # the terminal closes with the command
        if not chunk: break
        out += chunk
    os.close(master)
    assert p.wait(timeout=900) == 0, p.stderr.read()[-3000:]
    text = out.decode(errors='replace')
    assert '\r' in text and '100.00% [1/1' in text, text[-2000:]
    assert not re.search(r'\[1/1\] bce \| none \| 0 done', text) and 'runs to do' not in text, text[-2000:]
