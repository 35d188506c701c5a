"""Every text of the widget is readable in JupyterLab's light, dark and high-contrast themes (WCAG contrast
>= 4.5:1 against the background it is drawn on, measured in the browser), and values wrap at word
boundaries inside padded boxes (JupyterLab's own `pre` rules must not win)."""

from __future__ import annotations

import re

from .conftest import docs_screenshot

THEMES = ("JupyterLab Light", "JupyterLab Dark", "JupyterLab Dark High Contrast")

# [text, color, background, ratio, selector] of every visible element of the widgets holding text of its
# own, the background being the first opaque one up the tree (alpha-composited over what is below).
CONTRAST = """() => {
  const rgba = (c) => {  // rgb()/rgba(), or color(srgb r g b / a) (what color-mix() computes to)
    const srgb = c.match(/color\\(srgb ([^)]+)\\)/);
    const m = srgb || c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) throw new Error('unparsed colour ' + c);
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    const k = srgb ? 255 : 1;
    return [p[0] * k, p[1] * k, p[2] * k, p.length > 3 ? p[3] : 1];
  };
  const over = (top, below) => { const a = top[3]; return [0, 1, 2].map(i => top[i] * a + below[i] * (1 - a)).concat(1); };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let bg = [255, 255, 255, 1];
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const out = [];
  for (const w of document.querySelectorAll('.jps-widget')) for (const el of [w, ...w.querySelectorAll('*')]) {
    const own = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.data).join('').trim();
    if (!own || !el.getClientRects().length || el.closest(':disabled')) continue;
    const bg = background(el);
    let opacity = 1;
    for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
    const fg = over([...rgba(getComputedStyle(el).color).slice(0, 3), rgba(getComputedStyle(el).color)[3] * opacity], bg);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    out.push([own.slice(0, 30), fg.slice(0, 3).map(Math.round).join(','), bg.slice(0, 3).map(Math.round).join(','),
              Math.round((a + 0.05) / (b + 0.05) * 100) / 100, el.className || el.tagName]);
  }
  return out;
}"""

# [class, padding-left px, word-break, overflow-wrap, white-space] of the boxes holding values.
BOXES = """() => [...document.querySelectorAll('.jps-field-value, .jps-msg-content, .jps-raw, .jps-error')]
  .filter(e => e.getClientRects().length)
  .map(e => { const s = getComputedStyle(e);
    return [e.className, parseFloat(s.paddingLeft), s.wordBreak, s.overflowWrap, s.whiteSpace]; })"""


def _set_theme(page, theme: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(theme)}$")).click()
    page.wait_for_function("(t) => document.body.dataset.jpThemeName === t", arg=theme, timeout=20_000)
    page.wait_for_timeout(300)  # the theme's stylesheet applies


def test_every_text_has_contrast_in_every_theme_and_values_wrap_in_padded_boxes(page, lab):
    lab.open(page, "themes.ipynb")
    lab.run_all(page)
    page.wait_for_function(
        "() => { const ws = [...document.querySelectorAll('.jps-widget')];"
        " return ws.length === 2 && ws[0].dataset.status === 'done' && ws[1].dataset.status === 'error'; }",
        timeout=60_000)
    for details in page.locator(".jps-widget details").all():  # prediction, inspector, status log
        details.evaluate("d => { d.open = true; d.dispatchEvent(new Event('toggle')); }")
    failures = {}
    for theme in THEMES:
        _set_theme(page, theme)
        measured = page.evaluate(CONTRAST)
        assert len(measured) > 20, measured
        low = [m for m in measured if m[3] < 4.5]
        if theme == "JupyterLab Dark":
            docs_screenshot(page.locator(".jps-widget").first, "widget-dark.png")
        if low:
            failures[theme] = low
    assert not failures, "\n".join(f"{theme}: {row}" for theme, rows in failures.items() for row in rows)
    for cls, padding, word_break, overflow_wrap, white_space in page.evaluate(BOXES):
        assert padding >= 4 and word_break != "break-all" and overflow_wrap == "anywhere", (cls, padding, word_break)
        assert white_space == "pre-wrap", cls
