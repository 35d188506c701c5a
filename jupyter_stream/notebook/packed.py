"""The widget's front-end code as it goes over the wire: gzip-compressed, inside a tiny ES module loader.

anywidget sends a widget's ``_esm`` (and ``_css``) with every widget it opens, so the code is a fixed
cost of each ``%%stream`` cell: 28 kB for ``static/widget.js`` + ``static/widget.css`` as they are,
about 12 kB packed. The loader decodes the code with the browser's ``DecompressionStream``, adds the
stylesheet to the page once (a ``<style>`` whose id names the CSS's hash) and imports the module the way
anywidget itself does (a ``blob:`` URL), then hands anywidget its default export.

Example::

    >>> from jupyter_stream.notebook.packed import packed_esm, unpack
    >>> esm = packed_esm("export default {render() {}};", ".a { color: red }")
    >>> esm.startswith("// jupyter_stream widget") and "DecompressionStream" in esm
    True
    >>> unpack(esm)
    ('export default {render() {}};', '.a { color: red }')
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re

__all__ = ["packed_esm", "unpack"]

_LOADER = """\
// jupyter_stream widget: the code below is gzip + base64 (see jupyter_stream/notebook/packed.py)
const JS = "%(js)s";
const CSS = "%(css)s";
const STYLE_ID = "%(style_id)s";
async function inflate(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}
if (typeof document !== "undefined" && !document.getElementById(STYLE_ID)) {
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = await inflate(CSS);
  document.head.appendChild(style);
}
const url = URL.createObjectURL(new Blob([await inflate(JS)], { type: "text/javascript" }));
let mod;
try {
  mod = await import(url);
} finally {
  URL.revokeObjectURL(url);
}
export default mod.default;
"""

_FIELD_RE = re.compile(r'^const (JS|CSS) = "([A-Za-z0-9+/=]*)";$', re.M)


def _pack(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def packed_esm(js: str, css: str) -> str:
    """The loader module for the front-end code ``js`` (an ES module with a default export) and ``css``."""
    style_id = "jps-style-" + hashlib.sha256(css.encode("utf-8")).hexdigest()[:12]
    return _LOADER % {"js": _pack(js), "css": _pack(css), "style_id": style_id}


def unpack(esm: str) -> tuple[str, str]:
    """``(js, css)`` back from a loader made by :func:`packed_esm` (for tests and inspection)."""
    fields = dict(_FIELD_RE.findall(esm))
    return tuple(gzip.decompress(base64.b64decode(fields[k])).decode("utf-8") for k in ("JS", "CSS"))  # type: ignore[return-value]
