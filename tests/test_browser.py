"""A notebook in a real browser: JupyterLab on 127.0.0.1 and headless Chromium run every cell of a copy of the
notebook; no cell may raise, the explorers must render as widgets (not as their text form, `VBox(children=...)`),
and choosing another value in a dropdown must redraw the widget's output. Screenshots go to the test's tmp dir and,
when the environment variable CXR_SCREENSHOTS names a folder, there too.

Needs Debian's `chromium` (`apt-get install -y chromium`) and Playwright's Python package (no `playwright install`:
the system's Chromium is driven). Without them the test is skipped, except under CI (CI=true), where it fails.

The 15-minute tutorial runs here with `CXR_TUTORIAL_EPOCHS=2`: this test checks the tools (widgets render and respond),
while `nbdev_test` runs the whole tutorial and checks its statements."""
import json, os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
import fastcore.test as fct

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get('CI', '').lower() == 'true'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking']
RUN_TIMEOUT = float(os.environ.get('CXR_BROWSER_TIMEOUT', 480))   # seconds for all cells of one notebook
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'
# The text form a widget falls back to when no widget manager renders it.
WIDGET_REPR = re.compile(r'\b(?:VBox|HBox|Box|Dropdown|IntSlider|FloatSlider|Output|Tab|Accordion|Button)\(')
# The notebooks to open, each with the least number of cells whose value is a widget.
NOTEBOOKS = {'nbs/tutorials/15_minutes.ipynb': 3, 'nbs/23_widgets.ipynb': 2}
KERNEL_ENV = {'CXR_TUTORIAL_EPOCHS': '2'}          # the tutorial's short form: the tools, not the training


def _missing(reason):
    "Skip for want of a browser tool; under CI, where the tools are installed, fail instead."
    if IN_CI: pytest.fail(f"{reason} (CI=true: the browser test must run)")
    pytest.skip(reason)

def _chromium():
    for name in ('chromium', 'chromium-browser'):
        if shutil.which(name): return shutil.which(name)
    _missing("no `chromium` on PATH: apt-get install -y chromium")

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r: return r.status


@pytest.fixture(scope='module')
def browser():
    exe = _chromium()
    try: from playwright.sync_api import sync_playwright
    except ImportError: _missing("Playwright's Python package is not installed: pip install playwright")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on a free port of 127.0.0.1 with a token, serving an empty folder, with its own settings."
    d = tmp_path_factory.mktemp('lab')
    root, settings = d / 'root', d / 'settings'
    root.mkdir()
    for ext, vals in {'notebook-extension/tracker': {'windowingMode': 'none'},   # every cell in the DOM
                      'apputils-extension/notification': {'fetchNews': 'false', 'checkForUpdates': False}}.items():
        f = settings / '@jupyterlab' / f'{ext}.jupyterlab-settings'
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(vals))
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(d / 'workspaces'),
               JUPYTER_CONFIG_DIR=str(d / 'config'), JUPYTER_RUNTIME_DIR=str(d / 'runtime'),
               PYDEVD_DISABLE_FILE_VALIDATION='1', **KERNEL_ENV)
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
           '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
           '--LabApp.expose_app_in_browser=True']
    if hasattr(os, 'geteuid') and os.geteuid() == 0: cmd.append('--allow-root')
    log = open(d / 'jupyterlab.log', 'w')
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{(d / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                if _get(f'{base}/api/status?token={token}') == 200: break
            except OSError: pass
            if time.time() - t0 > 90: pytest.fail(f"JupyterLab did not answer in 90 s:\n{(d / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield dict(base=base, token=token, root=root, log=d / 'jupyterlab.log')
    finally:
        try:   # shuts the kernels down too
            urllib.request.urlopen(urllib.request.Request(f'{base}/api/shutdown', method='POST',
                                                          headers={'Authorization': f'token {token}'}), timeout=10)
            proc.wait(timeout=30)
        except Exception:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try: proc.wait(timeout=15)
                except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _save_shot(png:bytes, name:str, tmp_path:Path) -> Path:
    "Write a screenshot to `tmp_path` and, when CXR_SCREENSHOTS is set, to that folder too."
    f = tmp_path / name
    f.write_bytes(png)
    if os.environ.get('CXR_SCREENSHOTS'):
        out = Path(os.environ['CXR_SCREENSHOTS'])
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(png)
    return f

def _src(cell) -> str:
    return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']

def _errors(nb) -> list:
    "(cell index, first source line, error) of each code cell that did not run or raised."
    bad = []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code' or not _src(c).strip(): continue
        head = _src(c).strip().splitlines()[0][:80]
        errs = [o for o in c.get('outputs', []) if o['output_type'] == 'error']
        if errs: bad.append((i, head, f"{errs[0]['ename']}: {errs[0]['evalue']}"))
        elif c.get('execution_count') is None: bad.append((i, head, 'not run'))
    return bad

_RUN_ALL = """async (timeout) => {
  const app = window.jupyterapp, panel = app.shell.currentWidget;
  await panel.context.ready;
  await panel.sessionContext.ready;
  const timer = new Promise(resolve => setTimeout(() => resolve('timeout'), timeout));
  const ran = await Promise.race([app.commands.execute('notebook:run-all-cells'), timer]);
  if (ran !== 'timeout') await app.commands.execute('docmanager:save');
  return ran;
}"""

_CHANGED = """([el, before]) => {
  const out = el.querySelector('.widget-output');
  return out !== null && out.innerHTML !== before && out.querySelector('img') !== null;
}"""


@pytest.mark.parametrize('nb_path', list(NOTEBOOKS))
def test_notebook_runs_and_its_widgets_work(nb_path, browser, request, tmp_path):
    src = ROOT / nb_path
    if not src.exists(): pytest.skip(f"{nb_path} is not in this checkout")
    lab = request.getfixturevalue('lab')
    nb_file = lab['root'] / src.name
    shutil.copy(src, nb_file)                       # the copy is run and saved: the tree is left as it is
    for d in ('results',):                          # data the notebook reads by relative path, linked read-only
        if (src.parent / d).exists() and not (lab['root'] / d).exists(): (lab['root'] / d).symlink_to(src.parent / d)
    stem = src.stem
    page = browser.new_page(viewport={'width': 1400, 'height': 1000})
    page_errors = []
    page.on('pageerror', lambda e: page_errors.append(str(e)))
    try:
        page.goto(f"{lab['base']}/lab/tree/{src.name}?reset&token={lab['token']}")
        page.wait_for_function("""() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                                          return !!(w && w.sessionContext && w.content && w.content.widgets.length); }""",
                               timeout=90_000)
        ran = page.evaluate(_RUN_ALL, RUN_TIMEOUT * 1000)
        _save_shot(page.screenshot(), f'{stem}.png', tmp_path)
        assert ran != 'timeout', f"{nb_path}: running all cells took over {RUN_TIMEOUT:.0f} s"
        nb = json.loads(nb_file.read_text(encoding='utf-8'))
        bad = _errors(nb)
        raised, not_run = [b for b in bad if b[2] != 'not run'], [b[:2] for b in bad if b[2] == 'not run']
        assert ran is True and not bad, \
            f"{nb_path}: cells that raised: {raised}; {len(not_run)} cells that did not run, from: {not_run[:3]}"

        # Cells whose value is a widget render as widgets, not as their text form.
        widget_cells = [i for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code' and
                        any(WIDGET_MIME in o.get('data', {}) for o in c.get('outputs', []))]
        assert len(widget_cells) >= NOTEBOOKS[nb_path], \
            f"{nb_path}: {len(widget_cells)} cells show a widget, expected at least {NOTEBOOKS[nb_path]}"
        cells = page.locator('.jp-Notebook .jp-Cell')
        fct.test_eq(cells.count(), len(nb['cells']))
        for i in widget_cells:
            cell = cells.nth(i)
            area = cell.locator('.jp-Cell-outputArea')
            area.locator('.jp-OutputArea-output').first.wait_for(timeout=60_000)
            text = area.inner_text()
            assert not WIDGET_REPR.search(text), f"{nb_path}, cell {i}: a widget shown as text: {text[:300]}"
            assert 'Error displaying widget' not in text, f"{nb_path}, cell {i}: {text[:300]}"
            area.locator('.jupyter-widgets.widget-vbox, .jupyter-widgets.widget-hbox').first.wait_for(timeout=60_000)
            assert cell.locator('.widget-dropdown select, .widget-slider').count() >= 1, \
                f"{nb_path}, cell {i}: a widget without a dropdown or slider"
        outputs = page.locator('.jp-Cell-outputArea').all_inner_texts()
        shown_as_text = [t[:200] for t in outputs if WIDGET_REPR.search(t)]
        assert not shown_as_text, f"{nb_path}: widgets shown as text: {shown_as_text}"

        # Choosing another value in the first dropdown (with a choice to make) of each widget redraws its output.
        changed = 0
        for i in widget_cells:
            cell = cells.nth(i)
            sels = cell.locator('.widget-dropdown select')
            sels = [sels.nth(k) for k in range(sels.count()) if sels.nth(k).locator('option').count() > 1]
            if not sels: continue
            sel = sels[0]
            out = cell.locator('.widget-output').first
            out.locator('img').first.wait_for(timeout=60_000)
            before = out.inner_html()
            _save_shot(cell.screenshot(), f'{stem}-cell{i}-before.png', tmp_path)
            current = sel.input_value()
            options = sel.locator('option')
            other = next(j for j in range(options.count()) if options.nth(j).get_attribute('value') != current)
            label = options.nth(other).inner_text()
            sel.select_option(index=other)
            try:
                page.wait_for_function(_CHANGED, arg=[cell.element_handle(), before], timeout=120_000)
            except Exception as e:
                _save_shot(cell.screenshot(), f'{stem}-cell{i}-unchanged.png', tmp_path)
                raise AssertionError(f"{nb_path}, cell {i}: choosing {label!r} did not redraw the output") from e
            assert 'Traceback' not in out.inner_text(), f"{nb_path}, cell {i}: {out.inner_text()[:500]}"
            _save_shot(cell.screenshot(), f'{stem}-cell{i}-after.png', tmp_path)
            changed += 1
        assert changed >= NOTEBOOKS[nb_path], f"{nb_path}: {changed} widgets redrawn after a choice, expected {NOTEBOOKS[nb_path]}"
        fct.test_eq(page_errors, [])
    finally:
        page.close()
