/**
 * StreamWidget front end (an anywidget ESM module).
 *
 * Safety: everything the model writes is text. The DOM is built with createElement + textContent /
 * createTextNode only; no model data ever goes through innerHTML. Markdown mode renders a safe subset
 * (see state.ts) from a tree of plain strings.
 *
 * Speed: DOM updates are batched per animation frame, one frame for every view (inNextFrame): all views write,
 * then the panes that follow their end scroll (one layout per frame). A plain pane's text is a run of chunks of
 * about 16k characters, each grown with appendData (an append touches the last chunk only); whether a pane
 * follows its end comes from scroll events, never from reading layout in a frame (PaneView). The running views'
 * elapsed time ticks on one timer for all of them (setTicking), its writes in that shared frame.
 *
 * The comm listener lives in `initialize` (per model), not in `render`: anywidget delivers custom
 * messages that arrive before the first view exists only to listeners attached in `initialize`.
 *
 * Wire (described in jupyter_stream/notebook/wire.py): the text arrives once, in `deltas` messages that also
 * carry the live stats now and then; the traits are the durable state (the `panes` snapshot with its
 * `snapshot_seq` and `stats`, refreshed at the start, on request and at the end). A model created
 * while its stream runs (a page reloaded mid-stream) asks for a snapshot at once. `prediction` and the
 * `lm_calls` replies may refer to pane text (`{$pane: key}`): resolved here, from the panes. Each model
 * says `hello` when it comes up; the kernel may then send the final snapshot by reference (each pane's
 * `tail` and `len`, no text): filled in here from the deltas and set on the model locally (so a saved
 * widget state holds the text), or, if this model missed batches, asked for with a `resync`.
 * An LM call whose prompt messages are too big to sync (`held`: their characters) comes with a preview;
 * the inspector asks for the whole messages (`{type: "messages", call_id}`) when it shows that call and
 * keeps the answer here, out of the model's state (a saved notebook holds the preview only).
 */

import type { AnyWidget } from "@anywidget/types";
import type { FieldDiff, Traits, VariantState } from "./traits";
import {
  type Block,
  type Change,
  type DeltaMessage,
  type Inline,
  type ListItem,
  type Pane,
  type PaneSnapshot,
  type Stats,
  MarkdownStream,
  StreamState,
  formatStats,
  resolveText,
  splitVariant,
  VARIANT_SEP,
} from "./state";

/**
 * The part of anywidget's model (`AnyModel<Traits>`) we use, its traits typed by `traits.ts` (the one mirror
 * of the Python widget's traits). A trait may be missing from an old saved state: `get` may give undefined.
 */
export interface ModelLike {
  get<K extends keyof Traits>(name: K): Traits[K] | undefined;
  set<K extends keyof Traits>(name: K, value: Traits[K]): void;
  on(name: string, callback: (...args: any[]) => void): void;
  off(name?: string | null, callback?: ((...args: any[]) => void) | null): void;
  send(content: any, callbacks?: any, buffers?: any): void;
}

type Listener = (changes: Change[]) => void;

// --------------------------------------------------------------------------------- controller

/** Per model: the pane state, fed by deltas and snapshots; views subscribe to its changes. */
export class Controller {
  readonly state = new StreamState();
  private listeners = new Set<Listener>();
  private lastResync = -Infinity;
  private snapshotRef: unknown = undefined;
  private snapshotSeqRef: unknown = undefined;
  /** The stats of the newest batch that carried some, and its seq. */
  private liveStats: Stats | null = null;
  private liveStatsSeq = -Infinity;
  private newestSeq = -Infinity;
  /** A comparison's live stats per variant (the newest batch that carried each). */
  private liveVariantStats = new Map<string, Stats>();

  constructor(readonly model: ModelLike) {
    this.onSnapshot();
    model.on("msg:custom", this.onMessage);
    model.on("change:panes", this.onSnapshot);
    model.on("change:snapshot_seq", this.onSnapshot);
    // Tell the kernel a front end shows this model: its final snapshot may then come by reference.
    this.sendQuietly({ type: "hello" });
    // Created while the stream runs: a page reloaded (or a second client opened) mid-stream. The state
    // we were created from holds the last snapshot only: ask for a fresh one.
    if (model.get("status") === "running") this.requestResync();
  }

  /** The stats to show: those of the newest batch, unless the snapshot (the `stats` trait) is as new. */
  stats(): Stats {
    const snapshotSeq = Number(this.model.get("snapshot_seq")) || 0;
    if (this.liveStats && this.liveStatsSeq > snapshotSeq) return this.liveStats;
    return this.model.get("stats") ?? {};
  }

  /** A variant's stats: live while it runs, else those of the `variants` trait (its end). */
  variantStats(variant: VariantState): Stats {
    const live = this.liveVariantStats.get(variant.label);
    return variant.status === "running" && live ? live : (variant.stats ?? live ?? {});
  }

  /** The text of a pane, for references: the longer of what the deltas and the `panes` trait hold. */
  paneText(key: string): string | undefined {
    const live = this.state.get(key)?.text;
    const panes = this.model.get("panes");
    const snap = Array.isArray(panes) ? panes.find((p: PaneSnapshot | null) => p?.key === key)?.text : undefined;
    if (typeof snap !== "string") return live;
    return live !== undefined && live.length >= snap.length ? live : snap;
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  dispose(): void {
    this.model.off("msg:custom", this.onMessage);
    this.model.off("change:panes", this.onSnapshot);
    this.model.off("change:snapshot_seq", this.onSnapshot);
    this.listeners.clear();
  }

  private emit(changes: Change[]): void {
    if (!changes.length) return;
    for (const fn of this.listeners) fn(changes);
  }

  /** The whole messages of LM calls held in the kernel, by call id, once asked for and received. */
  private held = new Map<number, unknown[]>();
  private heldAsked = new Set<number>();
  /** False when asking failed: no kernel (a saved notebook shown without one). */
  kernelReachable = true;

  /** The whole prompt messages of LM call `callId` if they have arrived; else asks the kernel (once). */
  heldMessages(callId: number): unknown[] | undefined {
    const got = this.held.get(callId);
    if (got !== undefined) return got;
    if (!this.heldAsked.has(callId)) {
      this.heldAsked.add(callId);
      this.kernelReachable = this.sendQuietly({ type: "messages", call_id: callId });
    }
    return undefined;
  }

  readonly onMessage = (msg: any): void => {
    if (msg && msg.type === "messages" && Array.isArray(msg.messages)) {
      this.held.set(Number(msg.call_id), msg.messages);
      this.emit([{ kind: "messages" }]);
      return;
    }
    if (!msg || msg.type !== "deltas") return;
    const res = this.state.applyDeltas(msg as DeltaMessage);
    if (res.gap) this.requestResync();
    // Stats of the newest batch seen only (held-back batches included: stats do not depend on text).
    const seq = Number(msg.seq);
    if (Number.isFinite(seq) && seq > this.newestSeq) {
      this.newestSeq = seq;
      if (msg.stats && typeof msg.stats === "object") {
        this.liveStats = msg.stats as Stats;
        this.liveStatsSeq = seq;
        if (msg.vstats && typeof msg.vstats === "object") {
          for (const [label, stats] of Object.entries(msg.vstats as Record<string, Stats>)) {
            this.liveVariantStats.set(label, stats);
          }
        }
        res.changes.push({ kind: "stats" });
      }
    }
    this.emit(res.changes);
  };

  readonly onSnapshot = (): void => {
    const panes = this.model.get("panes");
    const seq = this.model.get("snapshot_seq");
    // One update message that sets both traits fires two change events: apply once.
    if (panes === this.snapshotRef && seq === this.snapshotSeqRef) return;
    this.snapshotRef = panes;
    this.snapshotSeqRef = seq;
    const full = this.state.resolveSnapshot(panes, seq ?? 0);
    if (full === null) {
      // A final snapshot by reference that this model cannot fill in (it missed batches): ask for the text.
      this.requestResync(true);
      return;
    }
    if (full.filled) {
      // Filled in from the deltas: set locally (not sent back), so the saved widget state holds the text.
      // This fires change:panes again, with the full panes.
      this.model.set("panes", [...full.panes]);
      return;
    }
    const res = this.state.applySnapshot(panes ?? [], seq ?? 0);
    this.emit(res.changes);
  };

  private requestResync(force = false): void {
    const now = Date.now();
    if (!force && now - this.lastResync < 500) return;
    this.lastResync = now;
    this.sendQuietly({ type: "resync", seq: this.state.appliedSeq });
  }

  /** Send to the kernel; false when there is none (a saved notebook shown without one). */
  private sendQuietly(content: unknown): boolean {
    try {
      this.model.send(content);
      return true;
    } catch {
      return false;
    }
  }
}

// ------------------------------------------------------------------------------ DOM helpers

function h<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = text;
  return el;
}

function renderInline(nodes: Inline[], parent: Node): void {
  for (const n of nodes) {
    switch (n.t) {
      case "text":
        parent.appendChild(document.createTextNode(n.v));
        break;
      case "code":
        parent.appendChild(h("code", undefined, n.v));
        break;
      case "strong": {
        const el = h("strong");
        renderInline(n.c, el);
        parent.appendChild(el);
        break;
      }
      case "em": {
        const el = h("em");
        renderInline(n.c, el);
        parent.appendChild(el);
        break;
      }
      case "br":
        parent.appendChild(h("br"));
        break;
    }
  }
}

const HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"] as const;

function renderList(items: ListItem[], parent: Node): void {
  // Nest by indent: a stack of [indent, list element].
  const stack: { indent: number; list: HTMLElement }[] = [];
  let lastLi: HTMLElement | null = null;
  for (const it of items) {
    while (stack.length && it.indent < stack[stack.length - 1].indent) stack.pop();
    let top = stack[stack.length - 1];
    if (!top || it.indent > top.indent) {
      const list = h(it.ordered ? "ol" : "ul");
      if (it.ordered && it.start !== 1 && Number.isFinite(it.start)) (list as HTMLOListElement).start = it.start;
      (top && lastLi ? lastLi : parent).appendChild(list);
      top = { indent: it.indent, list };
      stack.push(top);
    }
    const li = h("li");
    renderInline(it.c, li);
    top.list.appendChild(li);
    lastLi = li;
  }
}

/** Markdown blocks -> elements, appended to `parent`. Text only ever via text nodes. */
export function renderBlocks(blocks: Block[], parent: Node): void {
  for (const b of blocks) {
    switch (b.t) {
      case "p": {
        const el = h("p");
        renderInline(b.c, el);
        parent.appendChild(el);
        break;
      }
      case "h": {
        const el = h(HEADINGS[Math.min(6, Math.max(1, b.level | 0)) - 1]);
        renderInline(b.c, el);
        parent.appendChild(el);
        break;
      }
      case "code": {
        const pre = h("pre", "jps-md-code");
        pre.appendChild(h("code", undefined, b.v));
        parent.appendChild(pre);
        break;
      }
      case "list":
        renderList(b.items, parent);
        break;
      case "quote": {
        const el = h("blockquote");
        renderInline(b.c, el);
        parent.appendChild(el);
        break;
      }
      case "hr":
        parent.appendChild(h("hr"));
        break;
    }
  }
}

function pretty(value: unknown): string {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    return String(value);
  }
}

/** The benchmark's probe (benchmarks/_browser.py sets `globalThis.__jpsPerf`); absent otherwise. */
function perfProbe(): { frame(start: number, end: number, chars: number, longest: number): void } | undefined {
  const p = (globalThis as any).__jpsPerf;
  return p && typeof p.frame === "function" ? p : undefined;
}

function schedule(fn: () => void): void {
  if (typeof requestAnimationFrame === "function") requestAnimationFrame(() => fn());
  else setTimeout(fn, 16);
}

// ------------------------------------------------------------------------------ one frame for all

/** A frame job: DOM writes; it may return a second step (scrolling: reads layout), run after every job's writes. */
export type FrameJob = () => (() => void) | void;

interface FrameQueue {
  /** Run first, before any job writes: reads of the layout the last frame left. */
  reads: (() => void)[];
  jobs: FrameJob[];
  queued: boolean;
  /** Jobs of views out of sight: moved to `jobs` every OFFSCREEN_MS. */
  slow: FrameJob[];
  slowQueued: boolean;
  /** What the frame's jobs appended (characters, the longest pane's length): for the benchmark's probe. */
  chars: number;
  longest: number;
}

/** Kept on the global object: every view of every widget, and every copy of this module, shares one animation frame
 * (the packed loader shares one copy among the widgets with the same code; widgets of another version of the
 * package, or loaded otherwise, run their own). Its shape is the protocol between copies: change it, change the name. */
const FRAME_QUEUE = Symbol.for("jupyter_stream.frame-queue.v1");

function frameQueue(): FrameQueue {
  return ((globalThis as any)[FRAME_QUEUE] ??= {
    reads: [], jobs: [], queued: false, slow: [], slowQueued: false, chars: 0, longest: 0,
  });
}

/**
 * Run `job` at the next animation frame, together with every other view's: first the reads (readInNextFrame), then
 * all the jobs (DOM writes only), then the steps they return (scrolling to the end, which needs layout). So a
 * frame lays the page out at most twice (before and after the writes), however many views it updates, where a
 * view that wrote and then read layout by itself forced a layout each.
 */
export function inNextFrame(job: FrameJob, slow = false): void {
  const q = frameQueue();
  if (!slow) {
    q.jobs.push(job);
    queue(q);
    return;
  }
  // Out of sight: in a frame a few times a second, all such views together.
  q.slow.push(job);
  if (q.slowQueued) return;
  q.slowQueued = true;
  setTimeout(() => {
    q.slowQueued = false;
    q.jobs.push(...q.slow);
    q.slow = [];
    queue(q);
  }, OFFSCREEN_MS);
}

/** How often a view out of sight (IntersectionObserver) applies what arrived: 10 times a second, not per frame. */
export const OFFSCREEN_MS = 100;

/** Run `read` at the next animation frame, before any view writes: it sees the layout of the last frame. */
export function readInNextFrame(read: () => void): void {
  const q = frameQueue();
  q.reads.push(read);
  queue(q);
}

function queue(q: FrameQueue): void {
  if (q.queued) return;
  q.queued = true;
  schedule(() => runFrame(q));
}

function runFrame(q: FrameQueue): void {
  q.queued = false;
  const reads = q.reads;
  const jobs = q.jobs;
  q.reads = [];
  q.jobs = [];
  const probe = perfProbe();
  const t0 = probe ? performance.now() : 0;
  for (const read of reads) {
    try {
      read();
    } catch (e) {
      console.error(e);
    }
  }
  const after: (() => void)[] = [];
  for (const job of jobs) {
    try {
      const next = job();
      if (typeof next === "function") after.push(next);
    } catch (e) {
      console.error(e);
    }
  }
  for (const next of after) {
    try {
      next();
    } catch (e) {
      console.error(e);
    }
  }
  if (probe && q.chars) probe.frame(t0, performance.now(), q.chars, q.longest);
  q.chars = q.longest = 0;
}

// ----------------------------------------------------------------------------------- panes

/** Plain text is cut into chunks: a new chunk starts after a newline once a chunk holds CHUNK_CHARS characters
 * (or anywhere at CHUNK_MAX without a newline). See PaneView. */
export const CHUNK_CHARS = 4_096;
export const CHUNK_MAX = 4 * CHUNK_CHARS;
/** The first chunk, a Text node right in the pane, is short: a block chunk lays out faster. */
export const FIRST_CHUNK_CHARS = 1_024;
/** Block chunks sit in groups of this many, each group one `content-visibility: auto` box. See PaneView. */
export const GROUP_CHUNKS = 32;

/** Within this many pixels of the end, a pane counts as scrolled to the end. */
const AT_END_PX = 8;

/** The streaming box: while its widget runs and it is not done, a pane's text sits in a box of a set height
 * (widget.css: `data-box` 1, 2, 3: 6em, 14em, 32em, the last the pane's most), grown a step when its text overflows
 * it. See PaneView. */
export const BOX_STEPS = 3;

/**
 * One token pane.
 *
 * Plain mode: the text is a run of chunks, each grown with appendData; the first is a Text node in the pane, the
 * others each a `.jps-chunk` block holding one Text node, GROUP_CHUNKS of them to a `.jps-chunks` group. An append
 * copies and lays out the last chunk only, never the whole text (one Text node of 1M characters made every append
 * copy it and every frame lay it all out again), and groups out of sight skip layout and paint
 * (`content-visibility: auto`). The sizes, measured in a trace of JupyterLab streaming one pane to 1M characters
 * (benchmarks/_browser.py, scenario c): the browser lays out and paints the whole last chunk at each frame, so a
 * chunk is short (16k characters: layout 2.0-2.6 ms a frame; 4k: 0.9-1.2 ms), and it checks every
 * `content-visibility` box at each frame, so they are few (one per 4k chunk: 0.37 ms a frame near the start, 0.57
 * ms at 1M characters; one per group of 32: 0.36 and 0.43 ms). Scrolled back into view, a group lays out at once
 * (128k characters). A chunk ends after a newline, so the cut never shows (a block ending in a newline shows no
 * empty line); a text without newlines is cut every CHUNK_MAX characters (there a line may break early).
 *
 * Scrolling: the pane follows the end of its text while `stuck`, which only scroll events change (the reader
 * scrolled away from the end, or back to it: checked at the next frame before any view writes); an update never
 * reads layout to decide. `follow` scrolls, after every view's writes (see inNextFrame).
 *
 * The streaming box: while the widget runs and the pane is not done, its text has a height of its own and
 * `contain: strict` (widget.css), so what streams in lays out inside the pane and never moves the page below it:
 * with many widgets streaming at once, each growing line of each pane made the browser lay out and paint the
 * whole notebook again. The box grows in steps (`data-box`, BOX_STEPS of them): `follow`, which reads the layout
 * anyway, sees the text overflow it and grows it at the next frame's writes; so a pane moves the page a few
 * times while it streams, and once when it is done (the box then fits the text, as before).
 */
export class PaneView {
  readonly el: HTMLElement;
  readonly textEl: HTMLElement;
  /** Follows the end of the text (the reader has not scrolled up). */
  stuck = true;
  /** The browser skips rendering the pane's widget (far out of sight: widget.css); its scroll events then are
   * not the reader's (the browser may clamp the scroll of what it does not lay out). See StreamView.onRendered. */
  skipped = false;
  private mark: HTMLElement;
  /** Plain mode: the last chunk's Text node, its length, and whether it is full (the next text starts a chunk). */
  private chunk: Text | null = null;
  private chunkLen = 0;
  private chunkFull = false;
  /** Plain mode: the last group of block chunks, and how many it holds. */
  private group: HTMLElement | null = null;
  private groupLen = 0;
  private md: MarkdownStream | null = null;
  private mdDone: HTMLElement | null = null;
  private mdTail: HTMLElement | null = null;
  private tailDirty = false;
  /** Frames left in which `follow` scrolls again and scroll events do not unstick: after a render from the full
   * text, chunks laid out for the first time change the height. */
  private settling = 0;
  private unshown = 0;
  private checkQueued = false;
  /** The streaming box's step (see the class), and whether a step up waits for the next frame. */
  private box = 1;
  private growQueued = false;

  constructor(readonly pane: Pane, markdown: boolean) {
    const group = splitVariant(pane.predict).group; // in a comparison the column names the variant
    const label = group ? `${group}.${pane.field}` : pane.field;
    let head: HTMLElement;
    if (pane.reasoning) {
      const details = h("details", "jps-pane jps-reasoning");
      details.open = true;
      head = h("summary", "jps-pane-label");
      details.appendChild(head);
      this.el = details;
    } else {
      this.el = h("div", "jps-pane");
      head = h("div", "jps-pane-label");
      this.el.appendChild(head);
    }
    this.el.dataset.key = pane.key;
    head.appendChild(h("span", "jps-pane-name", label));
    this.mark = h("span", "jps-pane-mark");
    this.mark.setAttribute("aria-hidden", "true");
    head.appendChild(this.mark);
    this.textEl = h("div", "jps-pane-text");
    this.textEl.dataset.box = "1";
    this.textEl.addEventListener("scroll", this.onScroll, { passive: true });
    this.el.appendChild(this.textEl);
    this.setMarkdown(markdown, "");
    this.setDone(false);
  }

  /** Re-render from the full text (mode switch, rebuild). */
  setMarkdown(markdown: boolean, text: string): void {
    this.textEl.replaceChildren();
    this.group = null;
    this.textEl.classList.toggle("jps-md", markdown);
    if (text) this.settling = 3;
    if (markdown) {
      this.chunk = null;
      this.md = new MarkdownStream();
      this.mdDone = h("div", "jps-md-done");
      this.mdTail = h("div", "jps-md-tail");
      this.textEl.append(this.mdDone, this.mdTail);
      this.append(text);
      this.render();
    } else {
      this.md = this.mdDone = this.mdTail = null;
      this.chunk = document.createTextNode("");
      this.chunkLen = 0;
      this.chunkFull = false;
      this.textEl.appendChild(this.chunk);
      this.append(text);
    }
  }

  append(text: string): void {
    if (!text) return;
    if (this.chunk) {
      this.appendPlain(text);
    } else if (this.md) {
      const closed = this.md.feed(text);
      if (closed.length) renderBlocks(closed, this.mdDone!);
      this.tailDirty = true;
    }
  }

  /** Text, in chunks (see the class). */
  private appendPlain(text: string): void {
    const n = text.length;
    let i = 0;
    while (i < n) {
      if (this.chunkFull) this.newChunk();
      // This chunk may end after a newline once it holds `soft` characters, and must end at 4 * soft.
      const soft = this.chunk!.parentNode === this.textEl ? FIRST_CHUNK_CHARS : CHUNK_CHARS;
      const limit = i + 4 * soft - this.chunkLen;
      const nl = text.indexOf("\n", Math.max(i, i + soft - this.chunkLen - 1));
      let end = n;
      let full = false;
      if (nl >= 0 && nl < limit) {
        end = nl + 1;
        full = true;
      } else if (limit <= n) {
        end = limit;
        full = true;
        const c = text.charCodeAt(end - 1);
        if (c >= 0xd800 && c <= 0xdbff && end - 1 > i) end -= 1; // never split a surrogate pair
      }
      end = Math.max(end, i + 1); // always progress
      this.chunk!.appendData(i === 0 && end === n ? text : text.slice(i, end));
      this.chunkLen += end - i;
      this.chunkFull = full;
      i = end;
    }
  }

  private newChunk(): void {
    if (!this.group || this.groupLen >= GROUP_CHUNKS) {
      this.group = h("div", "jps-chunks");
      this.textEl.appendChild(this.group);
      this.groupLen = 0;
    }
    const block = h("div", "jps-chunk");
    this.chunk = document.createTextNode("");
    block.appendChild(this.chunk);
    this.group.appendChild(block);
    this.groupLen++;
    this.chunkLen = 0;
    this.chunkFull = false;
  }

  /** End of frame: re-render the open markdown block. */
  render(): void {
    if (!this.tailDirty || !this.md || !this.mdTail) return;
    this.tailDirty = false;
    this.mdTail.replaceChildren();
    renderBlocks(this.md.tail(), this.mdTail);
  }

  /**
   * After the frame's writes: scroll to the end if the pane follows it. True while it wants to run again next
   * frame (settling after a full render, or not shown yet).
   */
  follow(): boolean {
    const el = this.textEl;
    if (!el.isConnected) return this.settling > 0 && ++this.unshown < 120; // not shown (yet): 2 s at most
    if (this.stuck) {
      const height = el.scrollHeight;
      el.scrollTop = height;
      // The text overflows its streaming box: a step up at the next frame's writes (a write here would make the
      // next pane's read lay the page out again). Far over it (a long text rendered at once): the last step.
      if (this.box < BOX_STEPS && !this.growQueued && !this.el.classList.contains("done")) {
        const client = el.clientHeight;
        if (client > 0 && height > client + 1) {
          const to = height > 2 * client ? BOX_STEPS : this.box + 1;
          this.growQueued = true;
          inNextFrame(() => this.grow(to));
        }
      }
    }
    if (this.settling > 0) this.settling--;
    return this.settling > 0;
  }

  /** Rendered again after the browser skipped it: for a few frames, scroll to the end again if following, and
   * take no scroll event for the reader's. */
  resettle(): void {
    this.skipped = false;
    this.settling = Math.max(this.settling, 3);
  }

  /** The streaming box's step (1 to BOX_STEPS). */
  get boxStep(): number {
    return this.box;
  }

  private grow(to: number): void {
    this.growQueued = false;
    if (to <= this.box) return;
    this.box = to;
    this.textEl.dataset.box = String(to);
  }

  /** Scrolled (by the reader, or by `follow`): whether it is at the end is read at the next frame, before any
   * view writes (read here, it could force a layout between other handlers' writes, once per pane). */
  private readonly onScroll = (): void => {
    if (this.checkQueued) return;
    this.checkQueued = true;
    readInNextFrame(this.checkEnd);
  };

  private readonly checkEnd = (): void => {
    this.checkQueued = false;
    if (this.settling > 0 || this.skipped || !this.textEl.isConnected) return;
    const el = this.textEl;
    this.stuck = el.scrollHeight - el.scrollTop - el.clientHeight < AT_END_PX;
  };

  setDone(done: boolean): void {
    this.el.classList.toggle("done", done);
    this.mark.textContent = done ? "\u2713" : "";
    this.mark.title = done ? "done" : "streaming";
  }
}

// ------------------------------------------------------------------------------------ view

/** The header of one variant's column in a comparison, and the variant as last synced. */
interface VariantColumn {
  index: number;
  variant: VariantState;
  head: HTMLElement;
  model: HTMLElement;
  state: HTMLElement;
  message: HTMLElement;
  stats: HTMLElement;
  error: HTMLElement;
}

function makeColumn(variant: VariantState, index: number): VariantColumn {
  const head = h("div", "jps-variant");
  head.dataset.variant = variant.label;
  head.style.gridRow = "1";
  head.style.gridColumn = String(index + 1);
  const title = h("div", "jps-variant-head");
  const model = h("span", "jps-model");
  title.append(h("span", "jps-variant-label", variant.label), model);
  const line = h("div", "jps-status jps-variant-status");
  const indicator = h("span", "jps-indicator");
  indicator.setAttribute("aria-hidden", "true");
  const state = h("span", "jps-state");
  const message = h("span", "jps-status-message");
  const stats = h("span", "jps-stats");
  line.append(indicator, state, message, stats);
  const error = h("div", "jps-error");
  error.setAttribute("role", "alert");
  head.append(title, line, error);
  return { index, variant, head, model, state, message, stats, error };
}

/** One rendering of the widget. */
export class StreamView {
  readonly root: HTMLElement;
  private titleEl: HTMLElement;
  private modelEl: HTMLElement;
  private stopBtn: HTMLButtonElement;
  private stateEl: HTMLElement;
  private messageEl: HTMLElement;
  private statsEl: HTMLElement;
  private logEl: HTMLDetailsElement;
  private logSummary: HTMLElement;
  private logList: HTMLElement;
  private logCount = 0;
  private errorEl: HTMLElement;
  private panesEl: HTMLElement;
  private predictionEl: HTMLDetailsElement;
  private predictionBody: HTMLElement;
  private inspectorEl: HTMLDetailsElement;
  private inspectorSummary: HTMLElement;
  private inspectorBody: HTMLElement;
  private inspectorDirty = true;
  /** Shown with text that had not arrived yet: rendered again when panes change. */
  private inspectorIncomplete = false;
  private predictionIncomplete = false;

  private panes = new Map<string, PaneView>();
  private groups = new Map<string, HTMLElement>();
  /** A comparison (the `variants` trait): a grid, a column per variant under its header, a row per pane group and
   * field (`rows`: "group.field" -> grid row), so the same field of every variant sits side by side. */
  private columns = new Map<string, VariantColumn>();
  private columnKey = "";
  private rows = new Map<string, number>();
  private lastRowGroup = "";
  private nextRow = 2;
  private diffEl: HTMLDetailsElement;
  private diffBody: HTMLElement;
  private runDiffEl: HTMLDetailsElement;
  private runDiffSummary: HTMLElement;
  private runDiffBody: HTMLElement;
  // Work queued for the next frame.
  private needReset = false;
  private added: string[] = [];
  private appends = new Map<string, string[]>();
  private doneFlags = new Map<string, boolean>();
  private frameQueued = false;
  /** Panes whose end to show after this frame's writes. */
  private following = new Set<PaneView>();
  /** In or near the viewport (IntersectionObserver; true where there is none): else updates come OFFSCREEN_MS apart. */
  private shown = true;
  /** The browser skips rendering this widget (see onRendered). */
  private skipped = false;
  private sight: IntersectionObserver | null = null;
  private unsubscribe: () => void;
  private traitHandlers: [string, () => void][] = [];
  private stopping = false;
  private disposed = false;

  constructor(
    private model: ModelLike,
    el: HTMLElement,
    private controller: Controller,
  ) {
    this.root = h("div", "jps-widget");
    // The id the cell's static snapshot names: where this view shows, the snapshot hides (display.py).
    this.root.dataset.jpsUid = uidOf(model) ?? "";
    // Header: name, model, Stop.
    const header = h("div", "jps-header");
    this.titleEl = h("span", "jps-title");
    this.modelEl = h("span", "jps-model");
    this.stopBtn = h("button", "jps-stop", "Stop");
    this.stopBtn.type = "button";
    this.stopBtn.title = "Stop the stream";
    this.stopBtn.addEventListener("click", this.onStop);
    header.append(this.titleEl, this.modelEl, this.stopBtn);
    // Status line.
    const status = h("div", "jps-status");
    const indicator = h("span", "jps-indicator");
    indicator.setAttribute("aria-hidden", "true");
    this.stateEl = h("span", "jps-state");
    this.messageEl = h("span", "jps-status-message");
    this.statsEl = h("span", "jps-stats");
    status.append(indicator, this.stateEl, this.messageEl, this.statsEl);
    // Log.
    this.logEl = h("details", "jps-log");
    this.logSummary = h("summary", undefined, "Log");
    this.logList = h("ol", "jps-log-list");
    this.logEl.append(this.logSummary, this.logList);
    // Error, panes, prediction, inspector.
    this.errorEl = h("div", "jps-error");
    this.errorEl.setAttribute("role", "alert");
    this.panesEl = h("div", "jps-panes");
    this.predictionEl = h("details", "jps-prediction");
    this.predictionEl.appendChild(h("summary", undefined, "Prediction"));
    this.predictionBody = h("div", "jps-prediction-body");
    this.predictionEl.appendChild(this.predictionBody);
    this.inspectorEl = h("details", "jps-inspector");
    this.inspectorSummary = h("summary", undefined, "Prompt inspector");
    this.inspectorBody = h("div", "jps-inspector-body");
    this.inspectorEl.append(this.inspectorSummary, this.inspectorBody);
    this.inspectorEl.addEventListener("toggle", () => {
      if (this.inspectorEl.open && this.inspectorDirty) this.renderInspector();
    });
    this.diffEl = h("details", "jps-diff");
    this.diffEl.open = true;
    this.diffEl.appendChild(h("summary", undefined, "Diff"));
    this.diffBody = h("div", "jps-diff-body");
    this.diffEl.appendChild(this.diffBody);
    this.runDiffEl = h("details", "jps-rundiff");
    this.runDiffSummary = h("summary");
    this.runDiffBody = h("div", "jps-diff-body");
    this.runDiffEl.append(this.runDiffSummary, this.runDiffBody);

    this.root.append(header, status, this.logEl, this.errorEl, this.panesEl, this.diffEl, this.predictionEl,
      this.inspectorEl, this.runDiffEl);
    el.classList.add("jps-host");
    el.replaceChildren(this.root);

    this.renderHeader();
    this.renderStatus();
    this.renderLog();
    this.renderError();
    this.renderPrediction();
    this.renderInspectorSummary();
    this.renderVariants();
    this.renderDiff();
    this.renderRunDiff();
    this.rebuildPanes();

    const on = (name: string, fn: () => void) => {
      model.on(`change:${name}`, fn);
      this.traitHandlers.push([`change:${name}`, fn]);
    };
    on("title", () => this.renderHeader());
    on("model_name", () => this.renderHeader());
    on("status", () => this.renderStatus());
    on("status_message", () => this.renderStatus());
    on("started_at", () => this.renderStatus());
    on("stats", () => this.renderStats());
    on("status_log", () => this.renderLog());
    on("error", () => this.renderError());
    on("markdown", () => this.rebuildPanes());
    on("prediction", () => this.renderPrediction());
    on("lm_calls", () => this.renderInspectorSummary());
    on("variants", () => this.renderVariants());
    on("diff", () => this.renderDiff());
    on("run_diff", () => this.renderRunDiff());
    this.unsubscribe = controller.subscribe(this.onChanges);
    if (typeof IntersectionObserver === "function") {
      // A viewport's height of margin: a view about to scroll in is already up to date.
      this.sight = new IntersectionObserver(this.onSight, { rootMargin: "100% 0px" });
      this.sight.observe(this.root);
    }
    this.root.addEventListener("contentvisibilityautostatechange", this.onRendered);
  }

  /** The browser skips rendering a widget far out of sight (widget.css: `content-visibility`), and a scroll set
   * in a pane meanwhile may not hold: when it renders the widget again, the panes that follow their end scroll. */
  private readonly onRendered = (e: Event): void => {
    this.skipped = !!(e as Event & { skipped?: boolean }).skipped;
    if (this.disposed) return;
    for (const view of this.panes.values()) {
      if (this.skipped) {
        view.skipped = true;
      } else {
        view.resettle();
        this.following.add(view);
      }
    }
    if (!this.skipped) this.queueFrame();
  };

  private readonly onSight = (entries: IntersectionObserverEntry[]): void => {
    const shown = entries[entries.length - 1].isIntersecting;
    if (shown === this.shown) return;
    this.shown = shown;
    // Out of sight, the running indicator stops spinning (each spinning one costs the page a style and paint pass
    // every frame).
    this.root.classList.toggle("jps-away", !shown);
    if (!shown || this.disposed) return;
    this.renderStats();
    // Catch up at the next frame (a job already waiting in the slow lane then finds nothing left to do), and
    // scroll the panes that follow their end (not done while out of sight: see scrollStep).
    if (this.frameQueued || this.following.size) inNextFrame(() => this.flush());
  };

  dispose(): void {
    this.disposed = true;
    this.sight?.disconnect();
    this.root.removeEventListener("contentvisibilityautostatechange", this.onRendered);
    this.unsubscribe();
    for (const [name, fn] of this.traitHandlers) this.model.off(name, fn);
    this.traitHandlers = [];
    setTicking(this, false);
  }

  /** The shared clock ticked (see setTicking): the elapsed time, if in sight. */
  tick(): void {
    if (this.shown && !this.disposed) this.renderStats();
  }

  private get<K extends keyof Traits>(name: K): Traits[K] | undefined {
    return this.model.get(name);
  }

  // ---- panes

  private readonly onChanges = (changes: Change[]): void => {
    if (changes[changes.length - 1]?.kind === "stats" && this.shown) this.renderStats();
    if (this.needReset) return; // the rebuild at the next frame reads the full state
    for (const c of changes) {
      switch (c.kind) {
        case "reset":
          this.needReset = true;
          this.added = [];
          this.appends.clear();
          this.doneFlags.clear();
          this.queueFrame();
          return;
        case "add":
          this.added.push(c.key);
          break;
        case "append": {
          const parts = this.appends.get(c.key);
          if (parts) parts.push(c.text);
          else this.appends.set(c.key, [c.text]);
          break;
        }
        case "done":
          this.doneFlags.set(c.key, c.done);
          break;
        case "stats":
          break; // rendered above
        case "messages":
          this.inspectorDirty = true;
          if (this.inspectorEl.open) this.renderInspector();
          break;
      }
    }
    this.queueFrame();
  };

  private queueFrame(): void {
    if (this.frameQueued) return;
    this.frameQueued = true;
    inNextFrame(() => this.flush(), !this.shown);
  }

  /**
   * Apply everything queued since the last frame: DOM writes only. Returns the step that scrolls the panes that
   * follow their end, which the frame runs after every view's writes (see inNextFrame).
   */
  flush(): (() => void) | undefined {
    this.frameQueued = false;
    if (this.disposed) return undefined;
    if (this.needReset) {
      this.needReset = false;
      this.rebuildPanes();
    } else {
      for (const key of this.added) this.addPane(key);
      this.added = [];
      const q = frameQueue();
      for (const [key, parts] of this.appends) {
        const view = this.panes.get(key) ?? this.addPane(key);
        if (!view) continue;
        const text = parts.length === 1 ? parts[0] : parts.join("");
        view.append(text);
        view.render();
        this.following.add(view);
        q.chars += text.length;
        q.longest = Math.max(q.longest, view.pane.text.length);
      }
      this.appends.clear();
      for (const [key, done] of this.doneFlags) this.panes.get(key)?.setDone(done);
      this.doneFlags.clear();
      this.renderIncomplete();
    }
    return this.following.size ? this.scrollStep : undefined;
  }

  /** After every view's writes: scroll the panes that follow their end (the first read lays the page out once). */
  private readonly scrollStep = (): void => {
    // Out of sight, the panes keep following their end without scrolling: a scroll reads the layout, which the
    // browser skips for a widget far out of sight (widget.css). They scroll when it comes into sight (onSight).
    if (this.disposed || !this.shown) return;
    let again = false;
    for (const view of this.following) {
      if (view.follow()) again = true;
      else this.following.delete(view);
    }
    if (again) this.queueFrame();
  };

  /** Text referred to by the prediction or the inspector may have arrived: render them again. */
  private renderIncomplete(): void {
    if (this.predictionIncomplete) this.renderPrediction();
    if (this.inspectorIncomplete) {
      this.inspectorDirty = true;
      if (this.inspectorEl.open) this.renderInspector();
    }
  }

  private addPane(key: string): PaneView | undefined {
    const existing = this.panes.get(key);
    if (existing) return existing;
    const pane = this.controller.state.get(key);
    if (!pane) return undefined;
    const view = new PaneView(pane, !!this.get("markdown"));
    view.skipped = this.skipped;
    this.panes.set(key, view);
    const { variant, group: callGroup } = splitVariant(pane.predict);
    const column = variant === null ? undefined : this.columns.get(variant);
    if (column) {
      this.placeInGrid(view, column, callGroup);
      return view;
    }
    let group = this.groups.get(pane.predict);
    if (!group) {
      group = h("div", "jps-group");
      group.dataset.predict = pane.predict;
      group.appendChild(h("div", "jps-group-label", pane.predict || "(program)"));
      this.groups.set(pane.predict, group);
      this.panesEl.appendChild(group);
      this.panesEl.dataset.groups = String(this.groups.size);
    }
    group.appendChild(view.el);
    return view;
  }

  /** A comparison's pane: in its variant's column, on the row of its group and field (made when first seen). */
  private placeInGrid(view: PaneView, column: VariantColumn, group: string): void {
    const rowKey = `${group}.${view.pane.field}`;
    let row = this.rows.get(rowKey);
    if (row === undefined) {
      if (group && group !== this.lastRowGroup) {
        const label = h("div", "jps-group-label jps-row-label", group);
        label.style.gridRow = String(this.nextRow++);
        label.style.gridColumn = "1 / -1";
        this.panesEl.appendChild(label);
      }
      this.lastRowGroup = group;
      row = this.nextRow++;
      this.rows.set(rowKey, row);
    }
    view.el.style.gridRow = String(row);
    view.el.style.gridColumn = String(column.index + 1);
    this.panesEl.appendChild(view.el);
  }

  /** Rebuild every pane from the state (snapshot reset, markdown switch, first render). */
  private rebuildPanes(): void {
    this.panes.clear();
    this.groups.clear();
    this.panesEl.replaceChildren();
    this.panesEl.dataset.groups = "0";
    this.rows.clear();
    this.lastRowGroup = "";
    this.nextRow = 2;
    for (const column of this.columns.values()) this.panesEl.appendChild(column.head);
    this.added = [];
    this.appends.clear();
    this.doneFlags.clear();
    this.following.clear();
    for (const pane of this.controller.state.list()) {
      const view = this.addPane(pane.key)!;
      view.setMarkdown(!!this.get("markdown"), pane.text);
      view.setDone(pane.done);
      this.following.add(view); // a new pane shows the end of its text, as it did while it streamed
    }
    this.renderIncomplete();
    if (this.following.size) this.queueFrame();
  }

  // ---- header, status, log, error

  private renderHeader(): void {
    this.titleEl.textContent = this.get("title") || "stream";
    const model = this.get("model_name") || "";
    this.modelEl.textContent = model;
    this.modelEl.hidden = !model;
  }

  private renderStatus(): void {
    const status = this.get("status") || "idle";
    this.root.dataset.status = status;
    this.stateEl.textContent = status;
    const message = this.get("status_message") || "";
    this.messageEl.textContent = message;
    const running = status === "running";
    if (!running) this.stopping = false;
    this.stopBtn.disabled = !running || this.stopping;
    this.stopBtn.textContent = this.stopping ? "Stopping\u2026" : "Stop";
    setTicking(this, running);
    this.renderStats();
  }

  private renderStats(): void {
    const stats = this.controller.stats();
    let elapsed: number | null = null;
    const startedAt = this.get("started_at");
    if (this.get("status") === "running" && typeof startedAt === "number" && startedAt > 0) {
      // Tick locally from the start time; never show less than the kernel's own count (clock skew).
      const local = (Date.now() - startedAt) / 1000;
      const kernel = typeof stats.elapsed === "number" ? stats.elapsed : 0;
      elapsed = Math.max(local, kernel);
    }
    this.statsEl.textContent = formatStats(stats, elapsed);
    for (const column of this.columns.values()) {
      const v = column.variant;
      const own = this.controller.variantStats(v);
      const ownElapsed = v.status === "running" && elapsed !== null
        ? Math.max(elapsed, typeof own.elapsed === "number" ? own.elapsed : 0) : null;
      column.stats.textContent = formatStats(own, ownElapsed);
    }
  }

  // ---- a comparison: columns and diff

  private variants(): VariantState[] {
    const list = this.get("variants");
    return Array.isArray(list) ? list.filter((v) => v && typeof v === "object" && typeof v.label === "string") : [];
  }

  /** The variants' column headers (label, model, status, message, stats, error); a new set of variants rebuilds
   * the grid. */
  private renderVariants(): void {
    const variants = this.variants();
    this.root.classList.toggle("jps-compare", variants.length > 0);
    const key = variants.map((v) => v.label).join(VARIANT_SEP);
    if (key !== this.columnKey) {
      this.columnKey = key;
      this.columns.clear();
      variants.forEach((v, index) => this.columns.set(v.label, makeColumn(v, index)));
      this.panesEl.style.gridTemplateColumns = variants.length ? `repeat(${variants.length}, minmax(0, 1fr))` : "";
      this.rebuildPanes();
    }
    for (const v of variants) {
      const column = this.columns.get(v.label);
      if (!column) continue;
      column.variant = v;
      const status = v.status || "idle";
      column.head.dataset.status = status;
      column.state.textContent = status;
      column.model.textContent = v.model || "";
      column.model.hidden = !v.model;
      column.message.textContent = v.message || "";
      column.error.textContent = v.error || "";
      column.error.hidden = !v.error;
    }
    this.renderStats();
    this.renderPrediction();
  }

  /** The word diff of the variants' predictions (set at the end): kept words as text, `del`/`ins` around the rest. */
  private renderDiff(): void {
    const diff = (this.get("diff") ?? []).filter((d): d is FieldDiff => !!d && typeof d === "object" && Array.isArray(d.ops));
    this.diffBody.replaceChildren();
    for (const d of diff) {
      const row = h("div", "jps-diff-field");
      row.dataset.field = String(d.field);
      row.appendChild(h("div", "jps-field-name", `${d.field}: ${d.a} \u2192 ${d.b}`));
      const text = h("pre", "jps-diff-text");
      const changed = d.ops.some((op) => op[0] !== "=");
      if (!changed) text.appendChild(h("i", undefined, "the same"));
      else for (const [op, part] of d.ops) {
        const value = String(part ?? "");
        if (op === "-") text.appendChild(h("del", undefined, value));
        else if (op === "+") text.appendChild(h("ins", undefined, value));
        else text.appendChild(document.createTextNode(value));
      }
      row.appendChild(text);
      this.diffBody.appendChild(row);
    }
    this.diffEl.hidden = diff.length === 0;
  }

  private renderLog(): void {
    const log = (this.get("status_log") ?? []).map(String);
    if (log.length < this.logCount) {
      this.logList.replaceChildren();
      this.logCount = 0;
    }
    for (let i = this.logCount; i < log.length; i++) this.logList.appendChild(h("li", undefined, log[i]));
    this.logCount = log.length;
    this.logSummary.textContent = `Log (${log.length})`;
    this.logEl.hidden = log.length === 0;
  }

  private renderError(): void {
    const error = this.get("error") || "";
    this.errorEl.textContent = error;
    this.errorEl.hidden = !error;
  }

  private readonly onStop = (): void => {
    if (this.stopBtn.disabled) return;
    this.stopping = true;
    this.stopBtn.disabled = true;
    this.stopBtn.textContent = "Stopping\u2026";
    this.model.send({ type: "stop" });
  };

  // ---- prediction, inspector

  /** A value that may hold text by reference to a pane; notes in `incomplete` if some has not arrived. */
  private text(value: unknown, incomplete: { any: boolean }): string {
    const resolved = resolveText(value, (key) => this.controller.paneText(key));
    if (!resolved) return pretty(value);
    if (!resolved.complete) {
      incomplete.any = true;
      return resolved.text + "\u2026";
    }
    return resolved.text;
  }

  private renderPrediction(): void {
    if (this.columns.size) {
      this.renderVariantPredictions();
      return;
    }
    const pred = this.get("prediction") ?? {};
    const fields = pred.fields && typeof pred.fields === "object" ? pred.fields : {};
    const body = this.predictionBody;
    body.replaceChildren();
    const names = Object.keys(fields);
    const incomplete = { any: false };
    for (const name of names) {
      const row = h("div", "jps-field");
      row.dataset.field = name;
      row.append(h("div", "jps-field-name", name), h("pre", "jps-field-value", this.text(fields[name], incomplete)));
      body.appendChild(row);
    }
    this.predictionIncomplete = incomplete.any;
    const usage = pred.usage;
    if (usage && typeof usage === "object" && Object.keys(usage).length) {
      const row = h("div", "jps-field jps-usage");
      row.append(h("div", "jps-field-name", "usage"), h("pre", "jps-field-value", pretty(usage)));
      body.appendChild(row);
    }
    this.predictionEl.hidden = names.length === 0;
  }

  /** "Diff with the previous run of this cell": each block's heading, then its prompt lines or its word diff. */
  private renderRunDiff(): void {
    const d = this.get("run_diff") ?? {};
    const blocks = Array.isArray(d.blocks) ? d.blocks.filter((b) => b && typeof b.heading === "string") : [];
    this.runDiffEl.hidden = typeof d.title !== "string";
    this.runDiffSummary.textContent = `Diff with the previous run of this cell (${d.title ?? ""})` +
      (d.changed ? "" : ": no change");
    this.runDiffBody.replaceChildren();
    for (const block of blocks) {
      const row = h("div", "jps-diff-field");
      row.appendChild(h("div", "jps-field-name", block.heading));
      const pieces = Array.isArray(block.pieces) ? block.pieces : [];
      if (pieces.length) {
        const text = h("pre", "jps-diff-text");
        const lines = block.heading.startsWith("prompt");
        for (const [op, part] of pieces) {
          const value = lines ? `${op === "=" ? " " : op}${part ?? ""}\n` : String(part ?? "");
          text.appendChild(op === "-" ? h("del", undefined, value) : op === "+" ? h("ins", undefined, value)
            : document.createTextNode(value));
        }
        row.appendChild(text);
      }
      this.runDiffBody.appendChild(row);
    }
  }

  /** A comparison's predictions: a row per field, a value per variant (in the columns' order). */
  private renderVariantPredictions(): void {
    const variants = this.variants();
    const body = this.predictionBody;
    body.replaceChildren();
    const names: string[] = [];
    for (const v of variants) {
      for (const name of Object.keys(v.prediction?.fields ?? {})) if (!names.includes(name)) names.push(name);
    }
    const incomplete = { any: false };
    for (const name of names) {
      const row = h("div", "jps-field");
      row.dataset.field = name;
      row.appendChild(h("div", "jps-field-name", name));
      const values = h("div", "jps-variant-values");
      values.style.gridTemplateColumns = `repeat(${variants.length}, minmax(0, 1fr))`;
      for (const v of variants) {
        const fields = v.prediction?.fields ?? {};
        const cell = h("div", "jps-variant-value");
        cell.dataset.variant = v.label;
        cell.append(h("div", "jps-variant-label", v.label),
          h("pre", "jps-field-value", name in fields ? this.text(fields[name], incomplete) : "\u2014"));
        values.appendChild(cell);
      }
      row.appendChild(values);
      body.appendChild(row);
    }
    this.predictionIncomplete = incomplete.any;
    this.predictionEl.hidden = names.length === 0;
  }

  private renderInspectorSummary(): void {
    const calls = this.get("lm_calls") ?? [];
    this.inspectorSummary.textContent = `Prompt inspector (${calls.length} LM call${calls.length === 1 ? "" : "s"})`;
    this.inspectorEl.hidden = calls.length === 0;
    this.inspectorDirty = true;
    if (this.inspectorEl.open) this.renderInspector();
  }

  private renderInspector(): void {
    this.inspectorDirty = false;
    const calls = (this.get("lm_calls") ?? []).filter((c) => c && typeof c === "object");
    const body = this.inspectorBody;
    body.replaceChildren();
    const incomplete = { any: false };
    for (const call of calls) {
      const box = h("div", "jps-call");
      box.dataset.callId = String(call.call_id ?? "");
      const bits = [`#${call.call_id ?? "?"}`, String(call.variant ?? ""), String(call.predict ?? ""), String(call.model ?? "")];
      if (typeof call.ttft === "number") bits.push(`TTFT ${call.ttft.toFixed(2)} s`);
      if (typeof call.duration === "number" && call.duration > 0) bits.push(`${call.duration.toFixed(2)} s`);
      if (call.cached) bits.push("cached");
      box.appendChild(h("div", "jps-call-head", bits.filter(Boolean).join(" \u00b7 ")));
      let messages: any[] = Array.isArray(call.messages) ? call.messages : [];
      if (typeof call.held === "number") {
        const whole = this.controller.heldMessages(Number(call.call_id));
        if (whole) messages = whole;
        else box.appendChild(h("div", "jps-held", this.controller.kernelReachable
          ? `The prompt holds ${call.held.toLocaleString("en")} characters: loading it from the kernel\u2026`
          : `The prompt held ${call.held.toLocaleString("en")} characters: only the start of each message was saved.`));
      }
      for (const m of messages) {
        const msg = h("div", "jps-msg");
        const role = m && typeof m === "object" ? String(m.role ?? "") : "";
        msg.dataset.role = role;
        const cut = m && typeof m === "object" && typeof m.cut === "number" ? `\n\u2026 (${m.cut.toLocaleString("en")} more characters)` : "";
        msg.append(h("div", "jps-role", role || "message"), h("pre", "jps-msg-content", pretty(m?.content ?? m) + cut));
        box.appendChild(msg);
      }
      if (call.reasoning) {
        const r = h("div", "jps-msg jps-reply-reasoning");
        r.append(h("div", "jps-role", "reasoning (native)"), h("pre", "jps-msg-content", this.text(call.reasoning, incomplete)));
        box.appendChild(r);
      }
      const reply = h("div", "jps-msg jps-reply");
      const pending = call.raw === undefined || call.raw === null || (call.done === false && !call.raw);
      reply.append(
        h("div", "jps-role", "reply (raw)"),
        h("pre", "jps-raw", pending ? "(waiting for the reply\u2026)" : this.text(call.raw, incomplete)),
      );
      box.appendChild(reply);
      if (call.usage && typeof call.usage === "object" && Object.keys(call.usage).length) {
        const usage = h("div", "jps-msg jps-call-usage-row");
        usage.append(h("div", "jps-role", "usage"), h("pre", "jps-call-usage", pretty(call.usage)));
        box.appendChild(usage);
      }
      body.appendChild(box);
    }
    this.inspectorIncomplete = incomplete.any;
  }
}

// ------------------------------------------------------------------------------ one clock for all

/** How often a running view's elapsed time ticks. */
export const TICK_MS = 250;
/** The running views: one timer for all of them (not one each), whose writes go in the shared frame. */
const ticking = new Set<StreamView>();
let clock: ReturnType<typeof setInterval> | null = null;

function setTicking(view: StreamView, on: boolean): void {
  if (on) ticking.add(view);
  else ticking.delete(view);
  if (ticking.size && !clock) {
    clock = setInterval(() => inNextFrame(() => {
      for (const v of ticking) v.tick();
    }), TICK_MS);
  } else if (!ticking.size && clock) {
    clearInterval(clock);
    clock = null;
  }
}

// -------------------------------------------------------------------------------- anywidget

// ------------------------------------------------------------------------------- stylesheet

let stylesheetText = "";
/** Widgets may run different copies of this module (another version of the package on the page, or code loaded
 * without the packed loader): the sheets are kept on the document, by their text, so all copies share one. */
const SHEETS = Symbol.for("jupyter_stream.stylesheets");

function sheetFor(doc: Document): CSSStyleSheet {
  const registry: Map<string, CSSStyleSheet> = ((doc as any)[SHEETS] ??= new Map());
  let sheet = registry.get(stylesheetText);
  if (!sheet) {
    sheet = new doc.defaultView!.CSSStyleSheet();
    sheet.replaceSync(stylesheetText);
    registry.set(stylesheetText, sheet);
  }
  return sheet;
}

/** The widget's stylesheet, given by the packed loader (jupyter_stream/notebook/packed.py) before any view. */
export function useStylesheet(css: string): void {
  stylesheetText = css;
}

/**
 * Our stylesheet where `el` is shown: adopted by its document or shadow root (marimo shows each widget in
 * a shadow root that page styles do not reach). One sheet per document and stylesheet, shared by every view
 * (and every copy of this module); a root
 * without constructable stylesheets gets one `<style>`. Nothing assumes the global `document`.
 */
export function adoptStylesheet(el: HTMLElement): boolean {
  if (!stylesheetText) return true;
  if (!el.isConnected) return false;
  const root = el.getRootNode() as Document | ShadowRoot;
  const doc = el.ownerDocument;
  if ("adoptedStyleSheets" in root && typeof doc.defaultView?.CSSStyleSheet?.prototype.replaceSync === "function") {
    const sheet = sheetFor(doc);
    if (!root.adoptedStyleSheets.includes(sheet)) root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
    return true;
  }
  const holder = root instanceof doc.defaultView!.Document ? (root as Document).head : root;
  if (!holder.querySelector("style[data-jps-style]")) {
    const style = doc.createElement("style");
    style.dataset.jpsStyle = "";
    style.textContent = stylesheetText;
    holder.appendChild(style);
  }
  return true;
}

/** Adopt the stylesheet once `el` is in a document (a host may attach it after `render`). */
function adoptWhenShown(el: HTMLElement, tries = 600): void {
  if (adoptStylesheet(el) || tries <= 0) return;
  schedule(() => adoptWhenShown(el, tries - 1));
}

/** Controllers by the widget's `_uid` trait: `initialize` and `render` get different model proxies. */
const controllers = new Map<string, Controller>();

function uidOf(model: ModelLike): string | null {
  const uid = model.get("_uid");
  return typeof uid === "string" && uid ? uid : null;
}

/** Exposed for tests. */
export function controllerFor(model: ModelLike): Controller | undefined {
  const uid = uidOf(model);
  return uid ? controllers.get(uid) : undefined;
}

// Note: no named export called `render` or `initialize` (anywidget would take the module for the
// deprecated render-only API and skip `initialize`).
const widget = {
  initialize({ model }: { model: ModelLike }) {
    const controller = new Controller(model);
    const uid = uidOf(model);
    if (uid) controllers.set(uid, controller);
    return () => {
      controller.dispose();
      if (uid && controllers.get(uid) === controller) controllers.delete(uid);
    };
  },
  render({ model, el }: { model: ModelLike; el: HTMLElement }) {
    let controller = controllerFor(model);
    let own = false;
    if (!controller) {
      controller = new Controller(model);
      own = true;
    }
    const view = new StreamView(model, el, controller);
    adoptWhenShown(el);
    return () => {
      view.dispose();
      if (own) controller!.dispose();
    };
  },
};

// Compile-time check against anywidget's own contract (types only; nothing is bundled).
widget satisfies AnyWidget<Traits>;

export default widget;
