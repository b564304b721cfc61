"""Searchable, paginated tables in a self-contained page: markup plus one small inline script.

The script is allowed by its SHA-256 in the page's Content-Security-Policy (``script-src 'sha256-…'``),
so no other script can run and nothing is loaded from anywhere. Without JavaScript the table is simply
shown whole. A table may also take extra rows from a JSONL sidecar the reader picks with a file input
(``<input type=file>`` reads a local file without any network request, which ``fetch`` of a file: URL
could not do).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from html import escape
from typing import Final

__all__ = ["DRILL_CSS", "DRILL_SCRIPT", "drill_table", "script_csp_source"]

DRILL_SCRIPT: Final = """
document.querySelectorAll('div.drill').forEach(function (box) {
  var body = box.querySelector('tbody'), input = box.querySelector('input.drill-search');
  var info = box.querySelector('.drill-info'), prev = box.querySelector('button.drill-prev');
  var next = box.querySelector('button.drill-next'), file = box.querySelector('input.drill-sidecar');
  var columns = (box.dataset.columns || '').split(',');
  var size = parseInt(box.dataset.pageSize || '50', 10), page = 0, visible = [];
  // Rows are data; a <tr> is made only when its page is shown, so a sidecar of a million domains
  // costs one string per domain, not a million table rows.
  var items = Array.prototype.slice.call(body.rows).map(function (tr) {
    tr.hidden = true;
    return {tr: tr, cells: null, text: tr.textContent.toLowerCase()};
  });
  var shown = items;
  function cell(v) { return v === null || v === undefined ? '\u2014' : (Array.isArray(v) ? v.join(' ') : String(v)); }
  function row(item) {
    if (!item.tr) {
      item.tr = document.createElement('tr');
      item.cells.forEach(function (c) {
        var td = document.createElement('td'); td.textContent = c; item.tr.appendChild(td);
      });
    }
    return item.tr;
  }
  function filter() {
    var q = input.value.trim().toLowerCase();
    shown = q ? items.filter(function (it) { return it.text.indexOf(q) >= 0; }) : items;
    page = 0; draw();
  }
  function draw() {
    var pages = Math.max(1, Math.ceil(shown.length / size));
    page = Math.max(0, Math.min(page, pages - 1));
    visible.forEach(function (tr) { tr.hidden = true; });
    visible = shown.slice(page * size, (page + 1) * size).map(function (it) {
      var tr = row(it); tr.hidden = false; body.appendChild(tr); return tr;
    });
    info.textContent = shown.length + ' of ' + items.length + ' rows \u00b7 page ' + (page + 1) + ' of ' + pages;
    prev.disabled = page === 0; next.disabled = page >= pages - 1;
  }
  if (file) {
    file.addEventListener('change', function () {
      if (!file.files.length) { return; }
      file.files[0].text().then(function (text) {
        text.split('\\n').forEach(function (line) {
          if (!line.trim()) { return; }
          var record = JSON.parse(line), cells = columns.map(function (c) { return cell(record[c]); });
          items.push({tr: null, cells: cells, text: cells.join(' ').toLowerCase()});
        });
        filter();
      });
    });
  }
  input.addEventListener('input', filter);
  prev.addEventListener('click', function () { page -= 1; draw(); });
  next.addEventListener('click', function () { page += 1; draw(); });
  box.classList.add('drill-ready');
  draw();
});
"""

DRILL_CSS: Final = """
.drill .drill-bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 6px 0; }
.drill .drill-bar input.drill-search { flex: 1 1 180px; min-width: 0; padding: 4px 6px; font: inherit; }
.drill .drill-info { color: var(--muted); font-size: 13px; }
.drill .drill-scroll { overflow-x: auto; }
.drill table { table-layout: auto; }
"""


def script_csp_source(script: str = DRILL_SCRIPT) -> str:
    """The CSP source expression that allows exactly this inline script (CSP Level 2, hash-source)."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def drill_table(
    table_id: str, caption: str, header: Sequence[str], rows: Sequence[Sequence[str]], *,
    page_size: int = 50, sidecar: str | None = None, columns: Sequence[str] = (),
) -> str:
    """A searchable, paginated table; ``rows`` are plain-text cells (escaped here).

    With ``sidecar`` (a JSONL file name beside the page) the bar offers to load more rows from it: one
    JSON object per line, whose ``columns`` keys fill the cells in order.
    """
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    extra = "" if sidecar is None else (
        f'<label>more rows: <input type="file" class="drill-sidecar" accept=".jsonl,application/x-ndjson" '
        f'aria-label="load {escape(sidecar)}"></label> <span class="drill-info-sidecar">({escape(sidecar)}, '
        "beside this page)</span>")
    return (
        f'<div class="drill" id="{escape(table_id)}" data-page-size="{page_size}" '
        f'data-columns="{escape(",".join(columns))}">'
        f'<div class="drill-bar"><input type="search" class="drill-search" placeholder="search" '
        f'aria-label="search {escape(caption)}"><button type="button" class="drill-prev">previous</button>'
        f'<button type="button" class="drill-next">next</button><span class="drill-info"></span>{extra}</div>'
        f'<div class="drill-scroll"><table><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div></div>"
    )
