"""The students' copy of the course lab: nbs/tutorials/course_lab.ipynb without its reference solutions.

    python tests/students_copy.py    # writes nbs/tutorials/_students/course_lab.ipynb

The lab is the source. Its `#| hide` cells are the reference solutions, the checks of what its text says and the
self-checks (hidden cells whose code starts with the comment `# Self-check`). The copy keeps every other cell and the
self-checks, without their directives and with their code collapsed in JupyterLab; it leaves out the lab's paragraph
for teachers and points its relative links one folder up. nbdev skips folders whose name starts with '_', so the copy
is neither a docs page nor cleaned or tested by nbdev; tests/test_course_lab.py checks that it is up to date."""
import json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / 'nbs' / 'tutorials' / 'course_lab.ipynb'
COPY = LAB.parent / '_students' / 'course_lab.ipynb'
SELF_CHECK, TEACHERS = '# Self-check', '**For teachers.**'

def source(cell) -> str: return ''.join(cell['source'])

def directives(cell) -> list:
    "The cell's leading `#|` lines."
    out = []
    for l in source(cell).splitlines():
        if not l.startswith('#|'): break
        out.append(l)
    return out

def is_hidden(cell) -> bool: return cell['cell_type'] == 'code' and any(d.split() == ['#|', 'hide'] for d in directives(cell))

def is_self_check(cell) -> bool:
    return is_hidden(cell) and source(cell).splitlines()[len(directives(cell))].startswith(SELF_CHECK)

def _lines(s:str) -> list: return s.splitlines(keepends=True)

def _markdown(s:str) -> str:
    "Without the paragraph for teachers; relative links one folder up."
    s = '\n\n'.join(p for p in s.split('\n\n') if not p.startswith(TEACHERS))
    return re.sub(r'\]\((?![a-z]+:|/|#)', '](../', s)

def students_copy(lab:Path=LAB) -> dict:
    "The students' copy of the notebook `lab` (a notebook dict)."
    nb = json.loads(lab.read_text(encoding='utf-8'))
    cells = []
    for c in nb['cells']:
        if c['cell_type'] == 'markdown': c = {**c, 'source': _lines(_markdown(source(c)))}
        elif is_self_check(c):
            c = {**c, 'metadata': {'jupyter': {'source_hidden': True}},
                 'source': _lines('\n'.join(source(c).splitlines()[len(directives(c)):]))}
        elif is_hidden(c): continue
        cells.append(c)
    return {**nb, 'cells': cells}

def render(nb:dict) -> str:
    "The notebook's text as nbdev writes it."
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n'

if __name__ == '__main__':
    COPY.parent.mkdir(exist_ok=True)
    COPY.write_text(render(students_copy()), encoding='utf-8')
    print(f'wrote {COPY.relative_to(ROOT)}')
