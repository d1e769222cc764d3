"""The docs build up to Quarto: nbdev's notebook processing, then every processed page converts to HTML; the
hand-written sidebar lists every notebook once, in its section; the GitHub workflows test and publish the docs."""
import configparser, re, shutil, subprocess, sys
from pathlib import Path
import pytest, yaml
import fastcore.test as fct

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def proc(tmp_path_factory):
    d = tmp_path_factory.mktemp('docs')
    for p in ['nbs', 'cxr_noisy_lt']: shutil.copytree(ROOT / p, d / p, ignore=shutil.ignore_patterns('_proc', '__pycache__'))
    for p in ['settings.ini', 'setup.py']: shutil.copy(ROOT / p, d / p)
    code = ("from nbdev.serve import proc_nbs; from nbdev.quarto import nbdev_sidebar; "
            "nbdev_sidebar.__wrapped__(path='nbs'); proc_nbs('nbs', n_workers=1)")
    r = subprocess.run([sys.executable, '-c', code], cwd=d, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return d

@pytest.mark.slow
def test_every_notebook_is_processed(proc):
    "Every notebook becomes a page, except those nbdev skips (a name starting with '_' or '.', e.g. tutorials/_students/)."
    nbs = sorted(Path(p) for p in _notebooks())
    done = sorted(p.relative_to(proc / '_proc') for p in (proc / '_proc').rglob('*.ipynb'))
    assert nbs and done == nbs

@pytest.mark.slow
def test_pages_convert_to_html(proc):
    from nbconvert import HTMLExporter
    import nbformat
    ex = HTMLExporter()
    for p in sorted((proc / '_proc').rglob('*.ipynb')):
        html, _ = ex.from_notebook_node(nbformat.read(p, as_version=4))
        assert '<html' in html and 'Traceback (most recent call last)' not in html, p


@pytest.mark.slow
def test_sidebar_is_kept(proc):
    "nbdev leaves the hand-written sidebar alone (custom_sidebar = True) and ships it to Quarto with the pages."
    mine = (ROOT / 'nbs' / 'sidebar.yml').read_text()
    fct.test_eq((proc / 'nbs' / 'sidebar.yml').read_text(), mine)
    fct.test_eq((proc / '_proc' / 'sidebar.yml').read_text(), mine)


# The sidebar, nbs/sidebar.yml, resolved the way Quarto resolves it (quarto-cli: src/project/project-config.ts,
# website-sidebar-auto.ts and core/path.ts): a string is a page when the file exists and plain text otherwise;
# `auto: glob` and a section's `contents: glob` list the notebooks the glob matches, sorted by file name; a glob
# starting with '/' is anchored at nbs/, any other is searched in every folder ('**/' in front).
SECTIONS = ['Get started', 'Data', 'Methods', 'Evaluation & exploration', 'Tutorials', 'Benchmark results']

def _section_of(nb:str):
    "The section a notebook belongs in, by its folder or number."
    if nb.startswith('tutorials/'): return 'Tutorials'
    if nb == 'index.ipynb': return 'Get started'
    m = re.match(r'(\d\d)[a-z]*_', nb)               # 06a_..., 06b_...: parts of one subject
    n = int(m[1]) if m and '/' not in nb else -1
    if n in (0, 1, 2, 3, 6, 7): return 'Data'                # 06*, 07*: the real datasets
    if n == 5 or 10 <= n <= 19: return 'Methods'              # the learner, then the methods
    if n == 4 or 20 <= n <= 29: return 'Evaluation & exploration'
    if 30 <= n <= 49: return 'Benchmark results'

def _notebooks(nbs:Path=ROOT / 'nbs') -> list:
    "The notebooks under `nbs` (folders and files starting with '_' or '.' aside, as nbdev and Quarto skip them)."
    return sorted(p.relative_to(nbs).as_posix() for p in nbs.rglob('*.ipynb')
                  if not any(s.startswith(('_', '.')) for s in p.relative_to(nbs).parts))

def _glob_re(glob:str):
    out, i = '', 0
    while i < len(glob):
        if glob.startswith('**/', i): out, i = out + '(?:[^/]*/)*', i + 3
        elif glob.startswith('**', i): out, i = out + '.*', i + 2
        elif glob[i] == '*': out, i = out + '[^/]*', i + 1
        elif glob[i] == '?': out, i = out + '[^/]', i + 1
        else: out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out + r'\Z')

def _expand(glob:str, inputs:list, dirs:set) -> list:
    "The inputs an `auto` glob lists (index files aside: Quarto uses those as section links)."
    if glob.startswith('/'): full = glob[1:]
    else: full = '**/' + (glob.rstrip('/') + '/**' if glob.rstrip('/') in dirs else glob)
    rx = _glob_re(full)
    return sorted((p for p in inputs if rx.match(p) and not re.match(r'index\.\w+$', p.split('/')[-1])), key=_by_name)

def _by_name(p:str):
    "Quarto's order of globbed pages: file stems compared as `localeCompare` does (punctuation, digits, letters)."
    stem = p.split('/')[-1].rsplit('.', 1)[0].upper()
    return [(2 if c.isalpha() else 1 if c.isdigit() else 0, c) for c in stem]

def _resolve(sidebar:dict, inputs:list, dirs:set):
    "({section: [notebooks]}, literal entries naming no file, globbed folders that exist but match nothing)."
    res, missing, empty = {}, [], []
    def walk(items, sec):
        if isinstance(items, str): items = [{'auto': items}]
        for it in items:
            if isinstance(it, str): (res[sec].append if it in inputs else missing.append)(it)
            elif 'href' in it: (res[sec].append if it['href'] in inputs else missing.append)(it['href'])
            elif 'auto' in it:
                for g in ([it['auto']] if isinstance(it['auto'], str) else it['auto']):
                    found = _expand(g, inputs, dirs)
                    # Quarto 1.10+ stops with a TypeError on a folder glob ('dir/*...') whose folder exists
                    # but holds nothing it matches (quarto-cli issue 14757).
                    m = re.match(r'(.*?)/\*', g)
                    if m and m[1].lstrip('/') in dirs and not found: empty.append(g)
                    res[sec] += found
            elif 'section' in it:
                res.setdefault(it['section'], [])
                walk(it.get('contents', []), it['section'])
    walk(sidebar['website']['sidebar']['contents'], None)
    return res, missing, empty

def _dirs(inputs:list, nbs:Path=ROOT / 'nbs') -> set:
    return {p.relative_to(nbs).as_posix() for p in nbs.rglob('*') if p.is_dir()} | \
           {'/'.join(p.split('/')[:k]) for p in inputs for k in range(1, p.count('/') + 1)}

@pytest.fixture(scope='module')
def sidebar():
    return yaml.safe_load((ROOT / 'nbs' / 'sidebar.yml').read_text())

def test_sidebar_sections(sidebar):
    "The top level of the sidebar is the six sections, in their order."
    top = sidebar['website']['sidebar']['contents']
    fct.test_eq([it.get('section') if isinstance(it, dict) else it for it in top], SECTIONS)

def test_sidebar_lists_every_notebook_once_in_its_section(sidebar):
    nbs = _notebooks()
    assert 'index.ipynb' in nbs and '23_widgets.ipynb' in nbs, nbs
    res, missing, empty = _resolve(sidebar, nbs, _dirs(nbs))
    assert not missing, f"sidebar.yml names files that do not exist (Quarto would show them as plain text): {missing}"
    assert not empty, f"sidebar.yml globs a folder that exists but holds no notebook (Quarto stops on it): {empty}"
    listed = [nb for sec in res.values() for nb in sec]
    twice = sorted({nb for nb in listed if listed.count(nb) > 1})
    assert not twice, f"listed more than once in sidebar.yml: {twice}"
    fct.test_eq(sorted(listed), nbs)
    wrong = {nb: (sec, _section_of(nb)) for sec, l in res.items() for nb in l if sec != _section_of(nb)}
    assert not wrong, f"notebooks in the wrong section (section, expected): {wrong}"

def test_sidebar_places_new_notebooks(sidebar):
    "Notebooks to come land in their section with no edit of sidebar.yml: datasets split into 06*/07*, the inspector, tutorials."
    new = ['06_nih.ipynb', '07_chexpert.ipynb', '07_mimic.ipynb', '15_sampler.ipynb', '24_inspector.ipynb',
           '32_ablation.ipynb', 'tutorials/15_minutes.ipynb', 'tutorials/real_data.ipynb']
    nbs = sorted(set(_notebooks()) | set(new))
    res, missing, empty = _resolve(sidebar, nbs, _dirs(nbs))
    fct.test_eq((missing, empty), ([], []))
    for nb in new: assert nb in res[_section_of(nb)], (nb, res)
    listed = [nb for sec in res.values() for nb in sec]
    fct.test_eq(sorted(listed), nbs)                         # each once: '1*' does not take tutorials/15_minutes
    fct.test_eq({nb for nb in res['Data'] if nb[:2] in ('06', '07')}, {nb for nb in nbs if nb[:2] in ('06', '07')})
    fct.test_eq(res['Data'][:4], ['00_labels.ipynb', '01_phantom.ipynb', '02_noise.ipynb', '03_data.ipynb'])
    assert res['Data'].index('06_nih.ipynb') < res['Data'].index('07_chexpert.ipynb'), res['Data']
    fct.test_eq(res['Tutorials'], sorted(nb for nb in nbs if nb.startswith('tutorials/')))
    fct.test_eq(res['Tutorials'][0], 'tutorials/15_minutes.ipynb')       # the first a newcomer meets

def test_sidebar_resolver_catches_mistakes():
    "The checks above fail on a missing page, a doubly listed notebook, an unanchored glob and an empty folder glob."
    nbs = ['index.ipynb', '10_nvum.ipynb', 'tutorials/15_minutes.ipynb']
    def sb(*items): return {'website': {'sidebar': {'contents': list(items)}}}
    res, missing, _ = _resolve(sb({'section': 'A', 'contents': ['index.ipynb', '24_inspector.ipynb']}), nbs, {'tutorials'})
    fct.test_eq((res, missing), ({'A': ['index.ipynb']}, ['24_inspector.ipynb']))
    res, _, _ = _resolve(sb({'section': 'M', 'contents': [{'auto': '1*.ipynb'}]}), nbs, {'tutorials'})
    fct.test_eq(res['M'], ['10_nvum.ipynb', 'tutorials/15_minutes.ipynb'])       # unanchored: every folder
    res, _, _ = _resolve(sb({'section': 'M', 'contents': [{'auto': '/1*.ipynb'}]}), nbs, {'tutorials'})
    fct.test_eq(res['M'], ['10_nvum.ipynb'])
    _, _, empty = _resolve(sb({'section': 'T', 'contents': 'tutorials/*.ipynb'}), nbs[:2], {'tutorials'})
    fct.test_eq(empty, ['tutorials/*.ipynb'])
    _, _, empty = _resolve(sb({'section': 'T', 'contents': 'tutorials/*.ipynb'}), nbs[:2], set())
    fct.test_eq(empty, [])                                   # no folder: an empty section, which Quarto renders
    fct.test_eq(_section_of('08_x.ipynb'), None)
    fct.test_eq(sorted(['06b_y.ipynb', '06a_x.ipynb', '07_z.ipynb', '06_w.ipynb'], key=_by_name),
                ['06_w.ipynb', '06a_x.ipynb', '06b_y.ipynb', '07_z.ipynb'])


def _settings():
    cp = configparser.ConfigParser()
    cp.read(ROOT / 'settings.ini')
    return cp['DEFAULT']

def test_quarto_config_reads_nbdev_and_sidebar():
    q = yaml.safe_load((ROOT / 'nbs' / '_quarto.yml').read_text())
    fct.test_eq(q['project']['type'], 'website')
    assert {'nbdev.yml', 'sidebar.yml'} <= set(q['metadata-files']), q['metadata-files']
    fct.test_eq(_settings()['custom_sidebar'], 'True')

def test_nbdev_yml_is_what_nbdev_writes():
    "nbdev_docs rewrites nbs/nbdev.yml from settings.ini (refresh_quarto_yml): the file kept here is that file."
    from nbdev.quarto import _nbdev_yml
    s = _settings()
    vals = {k: s[k] for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}
    fct.test_eq((ROOT / 'nbs' / 'nbdev.yml').read_text(), _nbdev_yml.format(doc_path=Path(s['doc_path']).name, **vals))


# GitHub workflows: tests on every push (.ci/run, as locally), docs to GitHub Pages from the main branch.
def _workflow(name:str) -> dict:
    wf = yaml.safe_load((ROOT / '.github' / 'workflows' / name).read_text())
    if True in wf: wf['on'] = wf.pop(True)                  # YAML 1.1 reads the key `on` as true
    return wf

def _readme_commands():
    "The README's install command (without the `&& cxr_bench ...` that follows) and test command."
    lines = (ROOT / 'README.md').read_text().splitlines()
    install = next(l for l in lines if l.startswith('pip install ')).split('&&')[0].strip()
    return install, next(l for l in lines if l.startswith('nbdev_test'))

def test_ci_script_uses_the_readme_commands():
    r = subprocess.run(['bash', str(ROOT / '.ci' / 'run'), '--print'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    install, test = _readme_commands()
    fct.test_eq(r.stdout.splitlines(), [f'install: {install}', f'test: {test}'])
    assert install.startswith('pip install -e ".[dev]"'), install
    assert test.split('&&')[-1].strip().startswith('pytest'), test

def test_test_workflow_runs_the_ci_script():
    wf = _workflow('test.yaml')
    assert {'push', 'pull_request'} <= set(wf['on']), wf['on']
    (job,) = wf['jobs'].values()
    runs = [st['run'] for st in job['steps'] if 'run' in st]
    assert 'bash .ci/run ${{ matrix.part }}' in runs, runs   # .ci/run installs the README's way
    fct.test_eq(job['strategy']['matrix']['part'], ['', '--long 1', '--long 2'])   # README's command; the long runs
    uses = [st['uses'].split('@')[0] for st in job['steps'] if 'uses' in st]
    assert uses[0] == 'actions/checkout', uses
    fct.test_eq(str(job['env']['CI']).lower(), 'true')        # the browser test fails rather than skips
    assert job['timeout-minutes'] <= 25, job['timeout-minutes']
    image = job['container'] if isinstance(job['container'], str) else job['container']['image']
    m = re.match(r'python:(\d+\.\d+)-(bookworm|trixie)', image)   # Debian: apt-get install chromium
    assert m, image
    assert tuple(map(int, m[1].split('.'))) >= tuple(map(int, _settings()['min_python'].split('.'))), image

# fastai/workflows' quarto-ghp installs with `pip install -e ".[dev]"` (PyTorch's CPU wheels with torch_cpu, the
# default), runs nbdev_docs and publishes ./_docs.
QUARTO_GHP_INSTALL = 'pip install -e ".[dev]"'

def test_deploy_workflow_builds_the_docs_from_main():
    wf = _workflow('deploy.yaml')
    s = _settings()
    assert s['branch'] in wf['on']['push']['branches'], wf['on']
    fct.test_eq(wf['permissions']['contents'], 'write')
    (job,) = wf['jobs'].values()
    (step,) = [st for st in job['steps'] if st.get('uses', '').startswith('fastai/workflows/quarto-ghp@')]
    w = step.get('with', {})
    assert str(w.get('torch_cpu', True)).lower() == 'true', w
    assert tuple(map(int, str(w['version']).split('.'))) >= tuple(map(int, s['min_python'].split('.'))), w
    fct.test_eq(_readme_commands()[0], QUARTO_GHP_INSTALL)   # the deploy installs the package the README's way
    fct.test_eq(s['doc_path'], '_docs')
    fct.test_eq(yaml.safe_load((ROOT / 'nbs' / 'nbdev.yml').read_text())['project']['output-dir'], '_docs')

def test_ci_runs_the_long_runs_too():
    "The README's test command skips `#| slow` cells and tests marked slow; `.ci/run --long 1|2` runs them (CI jobs of their own)."
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'nbdev_test --flags slow' in ci and '-m slow --slow' in ci
    assert ci.index('nbdev_test --flags slow') < ci.index('eval "$test_cmd"')
    r = subprocess.run(['bash', str(ROOT / '.ci' / 'run'), '--long', '3'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'usage' in r.stderr, r.stderr
    flagged = [p.name for p in (ROOT / 'nbs').rglob('*.ipynb') if '#| slow' in p.read_text(encoding='utf-8')]
    assert {'15_minutes.ipynb', '01_phantom.ipynb'} <= set(flagged), flagged   # the tutorial's full length is a long run
    fct.test_eq(_settings()['tst_flags'].split(), ['notest', 'slow'])
