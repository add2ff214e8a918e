"""report.html: report.md rendered as one self-contained page (its images embedded), so the two files say
the same. Only the Markdown that report.markdown writes is understood: headings, paragraphs, "- " lists,
one table per block of "|" lines, images on their own line, and **bold**."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path


def _inline(text: str) -> str:
    """Escaped text with the report's one inline markup, **bold**."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def html_page(markdown_text: str, folder: Path, title: str) -> str:
    """report.md rendered as one self-contained page: its headings, paragraphs, lists and table, and its
    images embedded from `folder`. Only the Markdown that markdown() writes is understood."""
    body, lines, i = [], markdown_text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(block[0]))
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(r)) + "</tr>" for r in block[2:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append(f"<ul>{''.join(items)}</ul>")
            continue
        image = re.fullmatch(r"!\[(.*)\]\((.+)\)", line)
        if image:
            data = base64.b64encode((folder / image[2]).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(image[1])}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
        i += 1
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:nth-child(2){{text-align:left}}
img{{max-width:100%}}</style></head><body>
{chr(10).join(body)}
</body></html>
"""
