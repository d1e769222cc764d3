"""The course lab, nbs/tutorials/course_lab.ipynb, and its students' copy, nbs/tutorials/_students/course_lab.ipynb
(written by tests/students_copy.py): the copy is up to date, holds no reference solution and runs top to bottom; the
exercises add up to the lab's 90 minutes; the self-checks' helper says what differs for common wrong answers."""
import json, re, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
import fastcore.test as fct
sys.path.insert(0, str(Path(__file__).parent))
from students_copy import ROOT, LAB, COPY, students_copy, render, source, directives, is_hidden, is_self_check

def _lab(): return json.loads(LAB.read_text(encoding='utf-8'))['cells']
def _code(cell): return [l.strip() for l in source(cell).splitlines() if l.strip() and not l.strip().startswith('#')]

def test_copy_is_up_to_date():
    assert COPY.read_text(encoding='utf-8') == render(students_copy()), "run `python tests/students_copy.py`"

def test_copy_is_clean():
    "nbdev's clean would change nothing in the copy but the collapsed self-checks, a JupyterLab setting it does not keep."
    from nbdev.clean import clean_nb
    nb = students_copy()
    for c in nb['cells']: c['metadata'].pop('jupyter', None)
    text = render(nb)
    clean_nb(nb)
    fct.test_eq(render(nb), text)

def test_lab_exercises():
    "Each exercise: a stub, then a hidden self-check, then a hidden reference solution; a self-check is kept, a reference left out."
    cells = _lab()
    stubs = [i for i, c in enumerate(cells) if c['cell_type'] == 'code' and '# your code here' in source(c)]
    fct.test_eq(len(stubs), len(re.findall(r'^## Exercise', '\n'.join(source(c) for c in cells), flags=re.M)))
    for i in stubs:
        assert is_self_check(cells[i + 1]), source(cells[i + 1])[:200]
        assert is_hidden(cells[i + 2]) and not is_self_check(cells[i + 2]), source(cells[i + 2])[:200]
        assert source(cells[i + 2]).splitlines()[1].startswith('# Reference solution'), source(cells[i + 2])[:200]

def test_copy_holds_no_reference_solution():
    lab, copy = _lab(), students_copy()['cells']
    kept = {l for c in lab if not is_hidden(c) or is_self_check(c) for l in _code(c)}
    refs = [c for c in lab if is_hidden(c) and source(c).splitlines()[1].startswith('# Reference solution')]
    per_ref = [set(_code(c)) - kept for c in refs]                    # what only the reference solutions hold
    assert len(refs) == 7 and min(map(len, per_ref)) >= 5, [len(d) for d in per_ref]
    distinctive = set.union(*per_ref)
    in_copy = {l.strip() for c in copy for l in source(c).splitlines()}
    fct.test_eq(sorted(distinctive & in_copy), [])
    text = ''.join(source(c) for c in copy)
    assert '#|' not in text and 'Reference solution' not in text and 'For teachers' not in text
    checks = [c for c in copy if c['metadata'] == {'jupyter': {'source_hidden': True}}]
    fct.test_eq(len(checks), 8)                                   # the helper and one self-check per exercise
    assert all(source(c).startswith('# Self-check') for c in checks)

def test_exercises_add_up():
    "Exercises 1 to n, in order, whose minutes add up to the title's; the subtitle names no count that could go stale."
    md = '\n'.join(source(c) for c in _lab() if c['cell_type'] == 'markdown')
    title = re.search(r'^# A (\d+)-minute lab', md, flags=re.M)
    ex = re.findall(r'^## Exercise (\d+)\..*\((\d+) min', md, flags=re.M)
    fct.test_eq([int(n) for n, _ in ex], list(range(1, len(ex) + 1)))
    fct.test_eq(sum(int(m) for _, m in ex), int(title[1]))
    assert not re.search(r'\b(one|two|three|four|five|six|seven|eight|nine|ten|\d+) exercises', md, flags=re.I)

def test_intro_says_where_the_copy_is():
    intro = source(_lab()[1])
    path = COPY.relative_to(ROOT).as_posix()
    assert f'[`{path}`](https://github.com/' in intro and f'/blob/main/{path})' in intro, intro
    assert '`python tests/students_copy.py`' in intro and '`pytest tests/test_course_lab.py`' in intro

# The self-checks' helper, taken from the lab.
@pytest.fixture(scope='module')
def helper():
    cell = next(c for c in _lab() if is_hidden(c) and source(c).splitlines()[1].startswith('# Self-check helper'))
    ns = dict(np=np, pd=pd, torch=torch)
    exec('\n'.join(source(cell).splitlines()[len(directives(cell)):]), ns)
    return ns

@pytest.fixture
def rates():
    r = pd.DataFrame({'missed': [.4, .35, .5, .45], 'added': [.02, .01, .0, np.nan], 'wrong_pos': [.2, .3, .1, np.nan]},
                     index=['Atelectasis', 'Effusion', 'Hernia', 'Mass'])
    return r

def test_diagnoses(helper, rates):
    d = lambda yours, ref: helper['diagnose'](yours, ref)
    fct.test_eq(d(rates.iloc[::-1], rates), '')                                        # rows by their labels
    fct.test_eq(d(rates * (1 + 1e-9), rates), '')                                       # up to rounding
    fct.test_eq(d(rates.assign(missed=rates['missed'] * 100), rates),
                "column 'missed': 100 times the reference: a percent instead of a fraction?")
    fct.test_eq(d(rates.rename(columns={'wrong_pos': 'wrong'}), rates),
                "no column 'wrong_pos' but a column 'wrong'; expected the columns 'missed', 'added', 'wrong_pos'")
    fct.test_eq(d(rates.drop(columns='added'), rates), "no column 'added'; expected the columns 'missed', 'added', 'wrong_pos'")
    fct.test_eq(d(rates.assign(x=1), rates), "an extra column 'x'; expected the columns 'missed', 'added', 'wrong_pos'")
    fct.test_eq(d(rates.fillna(0), rates), "column 'added': a number where the reference has NaN (1 of 4 values, e.g. Mass)")
    fct.test_eq(d(rates['missed'].reset_index(drop=True), rates['missed']),
                "no label 'Atelectasis' in the index (0, 1, 2, 3); expected 'Atelectasis', 'Effusion', 'Hernia', 'Mass'")
    fct.test_eq(d(rates.to_numpy(), rates), "a ndarray, expected a pd.DataFrame indexed by 'Atelectasis', 'Effusion', 'Hernia', 'Mass'")
    fct.test_eq(d(np.zeros((14, 458)), np.zeros((458, 14))), "shape (14, 458), expected (458, 14) (transposed?)")
    fct.test_eq(d(torch.zeros(1), torch.tensor(0.)), "shape (1,), expected ()")
    fct.test_eq(d(-torch.tensor(.37), torch.tensor(.37)), "the reference with its sign flipped")
    fct.test_eq(d({'flipped': .3, 'added': .9}, {'flipped': .3, 'added': .2}), "['added'] 0.9, expected 0.2")
    fct.test_eq(d({'flipped': .3}, {'flipped': .3, 'added': .2}), "no key 'added'; expected the keys 'flipped', 'added'")
    fct.test_eq(d((.71, 14), (.71, 13)), "1 of 2 values differ, e.g. item 2: 14, expected 13")
    fct.test_eq(d(pd.Series(['tail', 'head'], ['B', 'A']), pd.Series(['head', 'tail'], ['A', 'B'])), '')
    fct.test_eq(d(pd.Series(['head', 'tail'], ['A', 'B']), pd.Series(['head', 'medium'], ['A', 'B'])),
                "1 of 2 values differ, e.g. B: 'tail', expected 'medium'")

def test_nan_counted_as_zero(helper):
    "A mean over all entries, unknown ones counted as 0, instead of over the known ones."
    z, y = torch.randn(8, 5, dtype=torch.float64), (torch.rand(8, 5) < .3).double()
    y[0, :4] = float('nan')                                                             # 36 of 40 known
    def loss(y, power, over_all):
        l = torch.where(torch.isnan(y), 0., (z - torch.nan_to_num(y)).abs() ** power)
        return l.sum() / (y.numel() if over_all else (~torch.isnan(y)).sum())
    losses = lambda over_all: [loss(y, p, over_all) for p in (1, 2, 3)]          # three settings of one loss
    fct.test_eq(helper['diagnose'](losses(True), losses(False)),
                "0.9 times the reference throughout: another denominator (a mean over all entries instead of the known ones?)")
    per_class = lambda m: np.nanmean(m, 0)
    m = np.where(np.random.default_rng(0).random((20, 3)) < .2, np.nan, 1.)
    assert helper['diagnose'](np.nan_to_num(m).mean(0), per_class(m)).startswith('3 of 3 values differ')

def test_check_prints_one_line(helper, capsys):
    check = helper['check']
    check('a', None, 1.); check('b', lambda: [None, None], [1, 2]); check('c', lambda: 1 / 0, 1.); check('d', .5, .5)
    check('e', .45, .5, wrong={"a mean over all entries: average over the known labels only": .45})
    check('f', .45, .5); check('g', [.5, .5], (.5, .5))
    then = " (the lab goes on with the reference)"
    fct.test_eq(capsys.readouterr().out.splitlines(), [
        'a: not answered yet' + then, 'b: not answered yet' + then, 'c: your code raised ZeroDivisionError: division by zero' + then,
        'd: agrees with the reference', 'e: differs: a mean over all entries: average over the known labels only' + then,
        'f: differs: 0.45, expected 0.5' + then, 'g: agrees with the reference'])

def test_copy_runs_top_to_bottom():
    "The copy, unanswered and with 2 training epochs instead of 16, runs in its folder; every check says 'not answered yet'."
    from execnb.nbio import dict2nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    nb = students_copy()
    regime = [c for c in nb['cells'] if 'epochs=16)' in source(c)]
    assert len(regime) == 1
    regime[0]['source'] = source(regime[0]).replace('epochs=16)', 'epochs=2)')
    nb = dict2nb(nb)
    before = sorted(COPY.parent.iterdir())
    with working_directory(COPY.parent): CaptureShell(mpl_format='png').run_all(nb, exc_stop=True)
    fct.test_eq(sorted(COPY.parent.iterdir()), before)                                  # it writes nothing there
    printed = [l for c in nb.cells if c.cell_type == 'code' and source(c).startswith('# Self-check:')
               for o in c.outputs if o.get('output_type') == 'stream' for l in ''.join(o['text']).splitlines()]
    fct.test_eq(len(printed), 14)
    assert all(l.endswith(': not answered yet (the lab goes on with the reference)') for l in printed), printed
