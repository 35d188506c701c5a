"""The widget's front-end code as it goes over the wire: gzip-compressed, inside a tiny ES module loader.

anywidget sends a widget's ``_esm`` (and ``_css``) with every widget it opens, so the code is a fixed
cost of each ``%%stream`` cell: 28 kB for ``static/widget.js`` + ``static/widget.css`` as they are,
about 12 kB packed. The loader decodes the code with the browser's ``DecompressionStream``, imports the
module the way anywidget itself does (a ``blob:`` URL), once per page for all widgets with the same code (kept
on the global object by that code: anywidget would import a new copy for each widget), gives it the stylesheet
(``useStylesheet``: each view adopts it into the document or shadow root it is shown in, one sheet per page, so
hosts that render widgets in a shadow root, like marimo, get it too), then hands anywidget its default export.

Example::

    >>> from jupyter_stream.notebook.packed import packed_esm, unpack
    >>> esm = packed_esm("export function useStylesheet(css) {}; export default {render() {}};", ".a { color: red }")
    >>> esm.startswith("// jupyter_stream widget") and "DecompressionStream" in esm
    True
    >>> unpack(esm)
    ('export function useStylesheet(css) {}; export default {render() {}};', '.a { color: red }')
"""

from __future__ import annotations

import base64
import gzip
import re

__all__ = ["packed_esm", "unpack"]

_LOADER = """\
// jupyter_stream widget: the code below is gzip + base64 (see jupyter_stream/notebook/packed.py)
const JS = "%(js)s";
const CSS = "%(css)s";
async function inflate(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}
// anywidget imports each widget's code on its own (a new module, compiled and run, per widget): every widget with
// this same code shares the module the first one loaded (as widgets whose code anywidget imports by URL do).
const loaded = (globalThis[Symbol.for("jupyter_stream.modules.v1")] ??= new Map());
const key = JS + "|" + CSS;  // "|" is not in base64
let mod = loaded.get(key);
if (!mod) {
  mod = (async () => {
    const url = URL.createObjectURL(new Blob([await inflate(JS)], { type: "text/javascript" }));
    try {
      const m = await import(url);
      m.useStylesheet(await inflate(CSS));
      return m;
    } finally {
      URL.revokeObjectURL(url);
    }
  })();
  loaded.set(key, mod);
  mod.catch(() => loaded.delete(key));  // a failed load is tried again by the next widget
}
export default (await mod).default;
"""

_FIELD_RE = re.compile(r'^const (JS|CSS) = "([A-Za-z0-9+/=]*)";$', re.M)


def _pack(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def packed_esm(js: str, css: str) -> str:
    """The loader module for the front-end code ``js`` (an ES module with a default export and a
    ``useStylesheet(css)`` export) and ``css``."""
    return _LOADER % {"js": _pack(js), "css": _pack(css)}


def unpack(esm: str) -> tuple[str, str]:
    """``(js, css)`` back from a loader made by :func:`packed_esm` (for tests and inspection)."""
    fields = dict(_FIELD_RE.findall(esm))
    return tuple(gzip.decompress(base64.b64decode(fields[k])).decode("utf-8") for k in ("JS", "CSS"))  # type: ignore[return-value]
