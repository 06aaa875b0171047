"""A document as Markdown and as HTML: the report is built once as a list of blocks and written
both ways, so the two never say different things.

Blocks: ("h1"|"h2"|"h3", text), ("p", text), ("ul", [items]), ("img", path, alt), ("table",
header, rows, align ("l"|"r" per column), bold rows (a set of row indices)). Text may hold
`code` and **bold**; a table cell may hold line breaks.

    render_markdown(doc)                 # for GitHub
    render_html(doc, folder, title)      # a self-contained page: inline CSS, figures as data URIs
    html_blocks(doc)                     # the blocks alone, for a page of someone else's
    scoped_css(".my-div", ("table", "th", "td"))   # the page's styles for those elements only
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def _inline_html(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            out.append(f"<strong>{html.escape(m.group(2))}</strong>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("\n", "<br>")


def render_markdown(doc: list[tuple]) -> str:
    out: list[str] = []
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
        elif kind == "table":
            _, header, rows, align, bold = block
            lines = [
                "| " + " | ".join(_md_cell(h) for h in header) + " |",
                "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|",
            ]
            for i, row in enumerate(rows):
                cells = [_md_cell(c) for c in row]
                if i in bold:
                    cells[0] = f"**{cells[0]}**"
                lines.append("| " + " | ".join(cells) + " |")
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
  max-width: 1200px; padding: 0 1em; color: #1f2328; line-height: 1.5; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }
th { background: #f6f8fa; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr.baseline td { font-weight: bold; background: #fff8c5; }
code { background: #f6f8fa; padding: 0 3px; border-radius: 3px; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
h1, h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
""".strip()


def render_html(doc: list[tuple], folder: Path, title: str) -> str:
    """A self-contained page: inline CSS, figures as base64 PNG data URIs, no scripts."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        html_blocks(doc, folder),
        "</body>",
        "</html>",
    ]
    return "\n".join(out) + "\n"


def html_blocks(doc: list[tuple], folder: Path | None = None) -> str:
    """The blocks of a document as HTML elements, no page around them; images are read from
    `folder`."""
    out = []
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{_inline_html(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "ul":
            items = "".join(f"<li>{_inline_html(item)}</li>" for item in block[1])
            out.append(f"<ul>{items}</ul>")
        elif kind == "img" and folder is not None:
            data = base64.b64encode((folder / block[1]).read_bytes()).decode("ascii")
            out.append(
                f'<p><img src="data:image/png;base64,{data}" alt="{html.escape(block[2])}"></p>'
            )
        elif kind == "table":
            _, header, rows, align, bold = block
            cls = ["" if a == "l" else ' class="r"' for a in align]
            head = "".join(
                f"<th{c}>{html.escape(h)}</th>" for h, c in zip(header, cls, strict=True)
            )
            body = []
            for i, row in enumerate(rows):
                cells = "".join(
                    f"<td{c}>{'<br>'.join(html.escape(x) for x in cell.split(chr(10)))}</td>"
                    for cell, c in zip(row, cls, strict=True)
                )
                body.append(f"<tr{' class=baseline' if i in bold else ''}>{cells}</tr>")
            out.append(
                f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
                + "\n".join(body)
                + "\n</tbody>\n</table>"
            )
    return "\n".join(out)


def scoped_css(scope: str, keep: tuple[str, ...]) -> str:
    """The page's rules for the elements in `keep`, each selector prefixed by `scope`: for a
    fragment shown in a page that has styles of its own (a notebook)."""
    rules = []
    for rule in re.findall(r"([^{}]+)\{([^}]*)\}", _CSS):
        selectors = [sel.strip() for sel in rule[0].split(",")]
        if all(sel.split(".")[0] in keep for sel in selectors):
            scoped = ", ".join(f"{scope} {sel}" for sel in selectors)
            rules.append(f"{scoped} {{ {' '.join(rule[1].split())} }}")
    return "\n".join(rules)


__all__ = ["html_blocks", "render_html", "render_markdown", "scoped_css"]
