"""Turn the markdown files of ``benchmarks/results/`` into reST for the
benchmarks page: headings, bullet lists, paragraphs and pipe tables, the
subset of markdown the benchmarks write (``_common.py``)."""

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
OUT = Path(__file__).resolve().parent / "results"
# Heading levels below the page's title and each file's section.
_UNDERLINES = {1: "-", 2: "~", 3: "^"}


def _inline(text):
    """Markdown inline code to reST; bold and italics read the same."""
    return re.sub(r"`([^`]+)`", r"``\1``", text)


def _table(lines):
    rows = [[_inline(cell.strip()) or " " for cell in line.strip().strip("|").split("|")]
            for line in lines if not re.fullmatch(r"\|(-+\|)+", line.strip())]
    width = max(len(row) for row in rows)
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in rows:
        row = row + [" "] * (width - len(row))
        out.append("   * - " + row[0])
        out.extend("     - " + cell for cell in row[1:])
    return out + [""]


def markdown_to_rst(text):
    out, table = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            out += _table(table)
            table = []
        heading = re.match(r"(#+) (.*)", line)
        if heading:
            title = _inline(heading.group(2))
            out += [title, _UNDERLINES[len(heading.group(1))] * len(title), ""]
        else:
            out.append(_inline(line))
    if table:
        out += _table(table)
    return "\n".join(out) + "\n"


def write_results_pages():
    OUT.mkdir(exist_ok=True)
    names = []
    for path in sorted(RESULTS.glob("*.md")):
        (OUT / f"{path.stem}.rst").write_text(markdown_to_rst(path.read_text()))
        names.append(path.stem)
    return names
