// @vitest-environment jsdom
// The pane's rendering cost: text in chunks, one frame for every view, following the end of the text without
// reading layout in an update, views out of sight updated a few times a second.
import { afterEach, describe, expect, it, vi } from "vitest";
import widget, { BOX_STEPS, CHUNK_CHARS, CHUNK_MAX, FIRST_CHUNK_CHARS, GROUP_CHUNKS, OFFSCREEN_MS, PaneView, TICK_MS, inNextFrame } from "../src/widget";
import { FakeModel, renderView } from "./fake_model";


const frame = () => new Promise<void>((r) => requestAnimationFrame(() => r()));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const cleanups: (() => void)[] = [];

function mount(attrs: Record<string, any> = {}) {
  const model = new FakeModel({ status: "running", ...attrs });
  const el = renderView(model, cleanups);
  return { model, el };
}

afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
  vi.restoreAllMocks();
  delete (globalThis as any).IntersectionObserver;
});

const textOf = (el: HTMLElement, key = "p.a") =>
  el.querySelector<HTMLElement>(`.jps-pane[data-key="${key}"] .jps-pane-text`)!;

/** An IntersectionObserver stand-in: returns, for a mounted view, its sight callback to call by hand. */
function fakeSight() {
  const observers: { cb: (e: any[]) => void; el?: Element }[] = [];
  (globalThis as any).IntersectionObserver = class {
    rec: { cb: (e: any[]) => void; el?: Element };
    constructor(cb: (e: any[]) => void) {
      this.rec = { cb };
      observers.push(this.rec);
    }
    observe(el: Element) {
      this.rec.el = el;
    }
    disconnect() {}
  };
  return (el: HTMLElement) => observers.find((o) => o.el && el.contains(o.el))!;
}

/** A running view whose pane "p.a" shows "start" in a scroll box of 1000 px, 100 px of it in view. */
async function mountScrolling() {
  const { model, el } = mount();
  model.deltas(["p.a", "start", false]);
  await frame();
  const t = textOf(el);
  const box = { height: 1000, client: 100, reads: 0 };
  const pos = scrollBox(t, box);
  return { model, el, t, box, pos };
}

/** Prose with a newline every `every` characters (`every` 0: none). */
function prose(n: number, every = 200): string {
  let s = "";
  for (let i = 0; s.length < n; i++) s += every && i % Math.ceil(every / 5) === 0 && i ? "word\n" : "word ";
  return s.slice(0, n);
}

/** The pane's chunks: [the Text node, or the .jps-chunk block (inside its .jps-chunks group), and its text]. */
function chunks(textEl: HTMLElement): { node: Node; text: string }[] {
  const nodes = [...textEl.childNodes].flatMap((n) => (n.nodeType === Node.TEXT_NODE ? [n] : [...n.childNodes]));
  return nodes.map((node) => ({ node, text: node.textContent ?? "" }));
}

function newPane(): PaneView {
  return new PaneView({ key: "p.a", predict: "p", field: "a", text: "", done: false, reasoning: false }, false);
}

/** jsdom lays nothing out: give an element a scroll box, and count the layout reads. */
function scrollBox(el: HTMLElement, box: { height: number; client: number; reads: number; log?: string[] }) {
  let top = 0;
  Object.defineProperty(el, "scrollHeight", { configurable: true, get: () => (box.reads++, box.log?.push("read"), box.height) });
  Object.defineProperty(el, "clientHeight", { configurable: true, get: () => (box.reads++, box.client) });
  Object.defineProperty(el, "scrollTop", {
    configurable: true,
    get: () => (box.reads++, top),
    set: (v: number) => {
      top = Math.max(0, Math.min(v, box.height - box.client));
    },
  });
  return { top: () => top };
}

describe("plain panes in chunks", () => {
  it("a long text is cut after newlines into chunks that join to the pane's text", () => {
    const view = newPane();
    const text = prose(200_000);
    for (let i = 0; i < text.length; i += 997) view.append(text.slice(i, i + 997));
    const cs = chunks(view.textEl);
    expect(view.textEl.textContent).toBe(text);
    expect(cs.map((c) => c.text).join("")).toBe(text);
    expect(cs.length).toBeGreaterThan(8);
    // The first chunk is a Text node in the pane, short; the others are .jps-chunk blocks of one Text node.
    expect(cs[0].node.nodeType).toBe(Node.TEXT_NODE);
    expect(cs[0].text.length).toBeGreaterThanOrEqual(FIRST_CHUNK_CHARS);
    expect(cs[0].text.length).toBeLessThan(FIRST_CHUNK_CHARS + 300);
    for (const c of cs.slice(1)) {
      expect((c.node as HTMLElement).className).toBe("jps-chunk");
      expect(c.node.childNodes.length).toBe(1);
      expect(c.node.firstChild!.nodeType).toBe(Node.TEXT_NODE);
    }
    // Every chunk but the last ends after a newline, once it holds CHUNK_CHARS (so the cut never shows).
    for (const c of cs.slice(1, -1)) {
      expect(c.text.endsWith("\n")).toBe(true);
      expect(c.text.length).toBeGreaterThanOrEqual(CHUNK_CHARS);
      expect(c.text.length).toBeLessThan(CHUNK_CHARS + 300);
    }
    // The blocks sit in groups of GROUP_CHUNKS (the last may hold fewer), and there is no other markup.
    const groups = [...view.textEl.children];
    expect(groups.length).toBe(Math.ceil((cs.length - 1) / GROUP_CHUNKS));
    for (const g of groups) expect(g.className).toBe("jps-chunks");
    expect(groups.slice(0, -1).every((g) => g.children.length === GROUP_CHUNKS)).toBe(true);
    expect([...view.textEl.querySelectorAll("*")].every((e) => e.className === "jps-chunk" || e.className === "jps-chunks")).toBe(true);
  });

  it("the cuts do not depend on how the text arrived: deltas, one piece, or a rebuild from the full text", () => {
    const text = prose(80_000, 333);
    const a = newPane();
    for (let i = 0; i < text.length; i += 7) a.append(text.slice(i, i + 7));
    const b = newPane();
    b.append(text);
    const c = newPane();
    c.setMarkdown(false, text);
    const cuts = (v: PaneView) => chunks(v.textEl).map((x) => x.text.length);
    expect(cuts(a)).toEqual(cuts(b));
    expect(cuts(c)).toEqual(cuts(b));
    expect(c.textEl.textContent).toBe(text);
  });

  it("a text without newlines is cut every CHUNK_MAX characters, never inside a surrogate pair", () => {
    const view = newPane();
    const text = ("x".repeat(CHUNK_MAX - 1) + "\u{1F600}").repeat(3) + "tail";
    for (let i = 0; i < text.length; i += 1000) view.append(text.slice(i, i + 1000));
    const cs = chunks(view.textEl);
    expect(cs.map((c) => c.text).join("")).toBe(text);
    expect(cs[0].text.length).toBe(4 * FIRST_CHUNK_CHARS);
    for (const c of cs.slice(1, -1)) expect(c.text.length).toBeLessThanOrEqual(CHUNK_MAX);
    for (const c of cs) {
      const first = c.text.charCodeAt(0);
      const last = c.text.charCodeAt(c.text.length - 1);
      expect(first >= 0xdc00 && first <= 0xdfff).toBe(false); // no chunk starts with a low surrogate
      expect(last >= 0xd800 && last <= 0xdbff).toBe(false); // no chunk ends with a high surrogate
    }
  });

  it("an append touches only the last chunk", () => {
    const view = newPane();
    view.append(prose(3 * CHUNK_CHARS));
    const before = chunks(view.textEl);
    const earlier = before.slice(0, -1).map((c) => (c.node.nodeType === Node.TEXT_NODE ? c.node : c.node.firstChild) as Text);
    const spies = earlier.map((t) => vi.spyOn(t, "appendData"));
    const texts = earlier.map((t) => t.data);
    for (let i = 0; i < 50; i++) view.append(" more");
    for (const s of spies) expect(s).not.toHaveBeenCalled();
    expect(earlier.map((t) => t.data)).toEqual(texts);
    expect(view.textEl.textContent!.endsWith(" more".repeat(50))).toBe(true);
  });

  it("hostile text in a long pane stays text", () => {
    const view = newPane();
    const evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>\n';
    const text = evil.repeat(Math.ceil((3 * CHUNK_CHARS) / evil.length));
    view.append(text);
    expect(view.textEl.textContent).toBe(text);
    expect(view.textEl.querySelector("img, script")).toBeNull();
    expect((window as any).__pwned).toBeUndefined();
  });
});

describe("one frame for every view", () => {
  it("many views share one animation frame; all write before any reads layout", async () => {
    const views = Array.from({ length: 5 }, () => mount());
    for (const { model } of views) model.deltas(["p.a", "hello", false]);
    await frame();
    const log: string[] = [];
    const boxes = views.map(({ el }) => {
      const box = { height: 500, client: 100, reads: 0, log };
      scrollBox(textOf(el), box);
      return box;
    });
    const append = Text.prototype.appendData;
    vi.spyOn(Text.prototype, "appendData").mockImplementation(function (this: Text, d: string) {
      log.push("write");
      append.call(this, d);
    });
    const raf = vi.spyOn(window, "requestAnimationFrame");
    for (const { model } of views) model.deltas(["p.a", " world", false]);
    expect(raf).toHaveBeenCalledTimes(1); // one frame asked for, not one per view
    await frame();
    expect(log.filter((x) => x === "write").length).toBe(5);
    expect(log.indexOf("read")).toBeGreaterThan(log.lastIndexOf("write")); // reads only after every write
    for (const { el } of views) expect(textOf(el).textContent).toBe("hello world");
    for (const { el } of views) expect(textOf(el).scrollTop).toBe(400); // each followed its end
    expect(boxes.every((b) => b.reads > 0)).toBe(true);
  });

  it("a job that throws does not stop the others", async () => {
    const err = vi.spyOn(console, "error").mockImplementation(() => {});
    const ran: number[] = [];
    inNextFrame(() => {
      throw new Error("boom");
    });
    inNextFrame(() => {
      ran.push(1);
      return () => ran.push(2);
    });
    await frame();
    expect(ran).toEqual([1, 2]);
    expect(err).toHaveBeenCalled();
  });
});

describe("following the end of the text", () => {
  it("follows while at the end, stops when the reader scrolls up, follows again back at the end", async () => {
    const { model, t, box, pos } = await mountScrolling();
    model.deltas(["p.a", " more", false]);
    await frame();
    expect(pos.top()).toBe(900);
    // The reader scrolls up: the next frame reads where the pane is, before any view writes.
    t.scrollTop = 300;
    t.dispatchEvent(new Event("scroll"));
    box.height = 1200;
    model.deltas(["p.a", " and more", false]);
    await frame();
    expect(pos.top()).toBe(300); // left where the reader put it
    expect(t.textContent).toBe("start more and more");
    // Back at the end: follows again.
    t.scrollTop = 1100;
    t.dispatchEvent(new Event("scroll"));
    await frame();
    box.height = 1500;
    model.deltas(["p.a", "!", false]);
    await frame();
    expect(pos.top()).toBe(1400);
  });

  it("an update reads no layout unless a pane scrolled or follows its end", async () => {
    const { model, el } = mount();
    model.deltas(["p.a", "x", false]);
    await frame();
    const t = textOf(el);
    const box = { height: 1000, client: 100, reads: 0 };
    scrollBox(t, box);
    t.scrollTop = 0;
    t.dispatchEvent(new Event("scroll"));
    await frame(); // the reader scrolled to the top: no longer follows
    box.reads = 0;
    for (let i = 0; i < 5; i++) {
      model.deltas(["p.a", "y", false]);
      await frame();
    }
    expect(box.reads).toBe(0);
    expect(t.textContent).toBe("xyyyyy");
  });

  it("a new view of a long text (a re-render, a reload) shows its end", async () => {
    const text = prose(100_000);
    const { model, el } = mount({ status: "done", panes: [{ key: "p.a", predict: "p", field: "a", text, done: true }], snapshot_seq: 1 });
    const t = textOf(el);
    expect(t.textContent).toBe(text);
    const pos = scrollBox(t, { height: 5000, client: 400, reads: 0 });
    await frame();
    expect(pos.top()).toBe(4600);
    // A second view of the same model, as JupyterLab makes when the output is displayed again.
    const el2 = document.createElement("div");
    document.body.appendChild(el2);
    const dispose = widget.render({ model, el: el2 });
    cleanups.push(() => (dispose(), el2.remove()));
    const pos2 = scrollBox(textOf(el2), { height: 5000, client: 400, reads: 0 });
    await frame();
    expect(pos2.top()).toBe(4600);
  });
});

describe("the streaming box", () => {
  it("grows a step at the next frame's writes when the text overflows it, to the last step when far over", async () => {
    const { model, el } = mount();
    model.deltas(["p.a", "start", false]);
    await frame();
    const t = textOf(el);
    expect(t.dataset.box).toBe("1");
    const log: string[] = [];
    const box = { height: 100, client: 100, reads: 0, log };
    scrollBox(t, box);
    model.deltas(["p.a", " fits", false]);
    await frame();
    await frame();
    expect(t.dataset.box).toBe("1"); // the text fits: no step
    box.height = 150; // a line over
    model.deltas(["p.a", " over", false]);
    await frame(); // read after the writes: a step is queued, not written between the reads
    expect(t.dataset.box).toBe("1");
    await frame();
    expect(t.dataset.box).toBe("2");
    box.client = 200;
    box.height = 900; // far over (a long text at once): the last step
    model.deltas(["p.a", " much more", false]);
    await frame();
    await frame();
    expect(t.dataset.box).toBe(String(BOX_STEPS));
    box.height = 5000;
    model.deltas(["p.a", " and more", false]);
    await frame();
    await frame();
    expect(t.dataset.box).toBe(String(BOX_STEPS)); // never past the last
  });

  it("a pane that is done, or scrolled up by the reader, does not grow", async () => {
    const { model, el } = mount();
    model.deltas(["p.a", "x", false], ["p.b", "y", false]);
    await frame();
    const a = textOf(el, "p.a");
    const b = textOf(el, "p.b");
    const boxA = { height: 100, client: 100, reads: 0 };
    const boxB = { height: 1000, client: 100, reads: 0 };
    scrollBox(a, boxA);
    scrollBox(b, boxB);
    b.scrollTop = 0;
    b.dispatchEvent(new Event("scroll"));
    await frame(); // b's reader scrolled up: b no longer follows its end
    boxA.height = 400;
    boxB.height = 1400;
    model.deltas(["p.a", "x", true], ["p.b", "y", false]);
    await frame();
    await frame();
    expect(a.closest(".jps-pane")!.classList.contains("done")).toBe(true);
    expect(a.dataset.box).toBe("1");
    expect(b.dataset.box).toBe("1");
  });
});

describe("views out of sight", () => {
  it("apply what arrived every OFFSCREEN_MS, and at once when they come into sight", async () => {
    const sightOf = fakeSight();
    const { model, el } = mount();
    const sight = sightOf(el);
    sight.cb([{ isIntersecting: false }]);
    const root = el.querySelector(".jps-widget")!;
    expect(root.classList.contains("jps-away")).toBe(true); // its running indicator stops spinning
    model.deltas(["p.a", "hidden", false]);
    await frame();
    await frame();
    expect(el.querySelector(".jps-pane-text")).toBeNull(); // not yet: out of sight
    await sleep(OFFSCREEN_MS + 50);
    await frame();
    expect(textOf(el).textContent).toBe("hidden");
    model.deltas(["p.a", " text", false]);
    await frame();
    expect(textOf(el).textContent).toBe("hidden");
    sight.cb([{ isIntersecting: true }]); // scrolled into sight: caught up at the next frame
    expect(root.classList.contains("jps-away")).toBe(false);
    await frame();
    expect(textOf(el).textContent).toBe("hidden text");
    model.deltas(["p.a", "!", false]);
    await frame();
    expect(textOf(el).textContent).toBe("hidden text!");
  });
});

describe("scrolling out of sight", () => {
  /** The event the browser fires when it starts or stops skipping a `content-visibility: auto` element. */
  function skipped(root: Element, value: boolean) {
    const e = new Event("contentvisibilityautostatechange");
    (e as any).skipped = value;
    root.dispatchEvent(e);
  }

  it("a view out of sight reads no layout to scroll; it shows the end of its panes once in sight", async () => {
    const sightOf = fakeSight();
    const { model, el, t, box, pos } = await mountScrolling();
    sightOf(el).cb([{ isIntersecting: false }]);
    box.reads = 0;
    box.height = 2000;
    model.deltas(["p.a", " more", false]);
    await sleep(OFFSCREEN_MS + 50);
    await frame();
    await frame();
    expect(t.textContent).toBe("start more"); // applied, not scrolled
    expect(box.reads).toBe(0);
    sightOf(el).cb([{ isIntersecting: true }]);
    await frame();
    await frame();
    expect(pos.top()).toBe(1900);
  });

  it("a scroll while the browser skips the widget does not stop its panes following; rendered again, they scroll", async () => {
    const { model, el, t, box, pos } = await mountScrolling();
    const root = el.querySelector(".jps-widget")!;
    model.deltas(["p.a", " more", false]);
    await frame();
    expect(pos.top()).toBe(900);
    skipped(root, true);
    t.scrollTop = 0; // the browser clamped the scroll of a pane it does not lay out: not the reader
    t.dispatchEvent(new Event("scroll"));
    await frame();
    box.height = 1500;
    skipped(root, false);
    for (let i = 0; i < 4; i++) await frame();
    expect(pos.top()).toBe(1400);
    box.height = 1800; // and it goes on following
    model.deltas(["p.a", "!", false]);
    for (let i = 0; i < 4; i++) await frame();
    expect(pos.top()).toBe(1700);
    // The reader's own scroll, the widget rendered, still stops it.
    t.scrollTop = 200;
    t.dispatchEvent(new Event("scroll"));
    for (let i = 0; i < 4; i++) await frame();
    model.deltas(["p.a", "?", false]);
    await frame();
    expect(pos.top()).toBe(200);
  });
});

describe("the elapsed time", () => {
  it("running views tick on one shared timer, their writes in the shared frame; none once they all end", async () => {
    const started = vi.spyOn(globalThis, "setInterval");
    const stopped = vi.spyOn(globalThis, "clearInterval");
    const ticks = () => started.mock.calls.filter((c) => c[1] === TICK_MS).length;
    const views = [mount({ started_at: Date.now() - 5_000 }), mount(), mount()];
    expect(ticks()).toBe(1);
    const stats = views[0].el.querySelector(".jps-stats")!;
    const before = stats.textContent;
    await sleep(TICK_MS * 2 + 50);
    await frame();
    expect(stats.textContent).not.toBe(before); // the clock ticked for it
    for (const v of views) v.model.set("status", "done");
    expect(stopped).toHaveBeenCalled();
    views[0].model.set("status", "running");
    expect(ticks()).toBe(2); // a new timer once one runs again
    views[0].model.set("status", "done");
  });
});
