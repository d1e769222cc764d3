"""The results pages: nbs/40_results.ipynb shows one `cxr_bench` run of the `full` profile kept in nbs/results/phantom/,
nbs/41_studies.ipynb the studies kept in nbs/results/full_grid/ and nbs/results/studies/.

    python tests/results_page.py --from bench_runs/full    # copy a run's report files and runs/, then refresh both pages
    python tests/results_page.py                              # refresh the pages from the files already there

Refreshing executes the notebooks and saves their outputs (tables as Markdown, plots as small PNGs), so the
docs show them; tests/test_results_page.py checks that the saved outputs are those of the kept files."""
import argparse, shutil, subprocess, sys
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / 'nbs' / '40_results.ipynb'
PAGES = (PAGE, ROOT / 'nbs' / '41_studies.ipynb')
DATA = ROOT / 'nbs' / 'results' / 'phantom'
FILES = ('results.csv', 'curves.csv', 'claims.csv', 'run.json')
RUN_FILES = ('*.csv', '*.boot.npz', 'seconds.json', 'machines.json', 'config.json')   # what the grid resumes from

def execute_page(page=PAGE):
    "The page's notebook with fresh outputs (executed in its own folder)."
    nb = read_nb(page)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    with working_directory(page.parent): CaptureShell(mpl_format='png').run_all(nb, exc_stop=True)
    return nb

def shrink_pngs(nb, colors=128):
    "Store every plot as a palette PNG (`colors` colours): a third of the bytes, the same picture for line plots and bars."
    import base64, io
    from PIL import Image
    for c in nb.cells:
        for o in c.get('outputs', []) if c.cell_type == 'code' else []:
            png = o.get('data', {}).get('image/png')
            if png is None: continue
            im = Image.open(io.BytesIO(base64.b64decode(png))).convert('RGB').quantize(colors, dither=Image.Dither.NONE)
            buf = io.BytesIO(); im.save(buf, format='PNG', optimize=True)
            o['data']['image/png'] = base64.b64encode(buf.getvalue()).decode()
    return nb

def text_outputs(nb) -> list:
    "The text of every output (Markdown, plain text, streams), cell by cell: what must match the kept data."
    out = []
    for c in nb.cells:
        if c.cell_type != 'code': continue
        for o in c.get('outputs', []):
            if 'text' in o: out.append(''.join(o['text']))
            for k in ('text/markdown', 'text/plain'):
                v = o.get('data', {}).get(k)
                if v is not None and not ''.join(v).startswith('<Figure'): out.append(''.join(v))
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--from', dest='src', help="a cxr_bench --out folder to take " + ', '.join(FILES) + " from")
    a = ap.parse_args()
    if a.src:
        src = Path(a.src)
        missing = [f for f in FILES if not (src / f).exists()]
        if missing: sys.exit(f"results_page: {src} has no {', '.join(missing)}: is it a cxr_bench --out folder?")
        (DATA / 'runs').mkdir(parents=True, exist_ok=True)
        for f in FILES: shutil.copy(src / f, DATA / f)
        for pat in RUN_FILES:
            for fn in (src / 'runs').glob(pat): shutil.copy(fn, DATA / 'runs' / fn.name)
    for page in PAGES:
        write_nb(shrink_pngs(execute_page(page)), page)
        subprocess.run(['nbdev_clean', '--fname', str(page)], check=True, cwd=ROOT)
        print(f"wrote {page.relative_to(ROOT)}")

if __name__ == '__main__':
    main()
