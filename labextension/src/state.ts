/**
 * Pure logic of the StreamWidget front end: no DOM here.
 *
 * - `StreamState`: the panes of one stream, fed by two sources that may overlap:
 *   batched deltas (custom messages `{type: "deltas", seq, items, stats?}`) and the `panes` snapshot
 *   trait (with `snapshot_seq`). A batch is applied only if `seq > appliedSeq`; a snapshot replaces the
 *   panes when `snapshot_seq >= appliedSeq` and sets `appliedSeq = max(appliedSeq, snapshot_seq)`,
 *   so text that reached us both ways is never applied twice. A batch that skips a seq (a page
 *   reloaded mid-stream missed some) is held back until a snapshot covers the gap.
 * - `resolveText`: text the kernel sends by reference to a pane (`{$pane: key, end?}`, alone or in a
 *   list of strings and references) in `prediction` and in the `lm_calls` replies.
 * - A small, safe markdown parser (`parseInline`, `MarkdownStream`, `parseMarkdown`) that turns text
 *   into a tree of plain strings; the view builds elements from it with `textContent` only.
 */

import type { PaneRef, PaneSnapshot, Stats } from "./traits";

export type { PaneRef, PaneSnapshot, Stats };

// ------------------------------------------------------------------------------------- panes

/** One delta: `[key, text, done]`. */
export type DeltaItem = [string, string, boolean];

/** The custom message Python sends with batched deltas (and, now and then, the live stats). */
export interface DeltaMessage {
  type: "deltas";
  seq: number;
  items: DeltaItem[];
  stats?: Stats;
  /** In a comparison, with `stats`: the stats of each variant still running, by label. */
  vstats?: Record<string, Stats>;
}

/** One pane as the view shows it. */
export interface Pane {
  key: string;
  predict: string;
  field: string;
  text: string;
  done: boolean;
  /** A reasoning field: shown in its own collapsible pane. */
  reasoning: boolean;
}

/** What changed, in order; a view replays these (or rebuilds everything on `reset`). */
export type Change =
  | { kind: "reset" }
  | { kind: "add"; key: string }
  | { kind: "append"; key: string; text: string }
  | { kind: "done"; key: string; done: boolean }
  | { kind: "stats" }
  /** The whole prompt messages of an LM call held in the kernel arrived (see `Controller.heldMessages`). */
  | { kind: "messages" };

export interface ApplyResult {
  /** False when the message was ignored (already applied, older, or held back). */
  applied: boolean;
  changes: Change[];
  /** True when a batch skipped a seq: ask the kernel for a fresh snapshot. */
  gap: boolean;
}

const REASONING_FIELDS = new Set(["reasoning", "reasoning_content", "thinking"]);

export function isReasoningField(field: string): boolean {
  return REASONING_FIELDS.has(field);
}

/** Between a variant's label and the rest of a pane's group in a comparison (wire.py: VARIANT_SEP). */
export const VARIANT_SEP = "\x1f";

/** A pane group of a comparison, `"model=a\x1freact[2]"` -> `{variant: "model=a", group: "react[2]"}`; outside
 * one, `{variant: null, group}`. */
export function splitVariant(predict: string): { variant: string | null; group: string } {
  const i = predict.indexOf(VARIANT_SEP);
  return i < 0 ? { variant: null, group: predict } : { variant: predict.slice(0, i), group: predict.slice(i + 1) };
}

/** `"step.generate.answer"` -> `{predict: "step.generate", field: "answer"}` (split on the last dot). */
export function splitKey(key: string): { predict: string; field: string } {
  const i = key.lastIndexOf(".");
  return i < 0 ? { predict: "", field: key } : { predict: key.slice(0, i), field: key.slice(i + 1) };
}

function makePane(key: string, predict?: string, field?: string): Pane {
  const split = splitKey(key);
  const p = typeof predict === "string" ? predict : split.predict;
  const f = typeof field === "string" && field ? field : split.field;
  return { key, predict: p, field: f, text: "", done: false, reasoning: isReasoningField(f) };
}

function isDeltaItem(x: unknown): x is DeltaItem {
  return Array.isArray(x) && typeof x[0] === "string" && (x[1] === undefined || x[1] === null || typeof x[1] === "string");
}

/** Held-back batches beyond this many are applied anyway (better a hole than a frozen pane). */
const MAX_HELD = 2000;

export class StreamState {
  appliedSeq = 0;
  private panes = new Map<string, Pane>();
  private held = new Map<number, DeltaMessage>();

  /** The panes in display order (first seen first). */
  list(): Pane[] {
    return [...this.panes.values()];
  }

  get(key: string): Pane | undefined {
    return this.panes.get(key);
  }

  get size(): number {
    return this.panes.size;
  }

  /** Number of batches held back waiting for a snapshot. */
  get heldCount(): number {
    return this.held.size;
  }

  /** Apply a batch of deltas if it is the next one; hold it back if it skips a seq. */
  applyDeltas(msg: DeltaMessage): ApplyResult {
    const seq = Number(msg?.seq);
    if (!Number.isFinite(seq) || seq <= this.appliedSeq) return { applied: false, changes: [], gap: false };
    if (seq > this.appliedSeq + 1) {
      this.held.set(seq, msg);
      if (this.held.size <= MAX_HELD) return { applied: false, changes: [], gap: true };
      // Give up waiting: apply what we have, in order.
      const changes: Change[] = [];
      const seqs = [...this.held.keys()].sort((a, b) => a - b);
      for (const s of seqs) {
        const m = this.held.get(s)!;
        this.held.delete(s);
        this.applyItems(m.items, changes);
        this.appliedSeq = s;
      }
      return { applied: true, changes, gap: true };
    }
    const changes: Change[] = [];
    this.applyItems(msg.items, changes);
    this.appliedSeq = seq;
    this.drainHeld(changes);
    return { applied: true, changes, gap: false };
  }

  /**
   * The snapshot with every pane's text: `filled: false` and the snapshot itself when it carries the
   * text; for one sent by reference, `filled: true` and the text this state holds plus each `tail`, if
   * this state applied exactly the batches up to `seq` and every length matches; else `null` (ask the
   * kernel for the text).
   */
  resolveSnapshot(
    snapshot: readonly PaneSnapshot[] | null | undefined,
    seq: number,
  ): { panes: readonly PaneSnapshot[]; filled: boolean } | null {
    const list = Array.isArray(snapshot) ? snapshot : [];
    const byRef = (p: PaneSnapshot | null) => !!p && typeof p.text !== "string" && (p.tail !== undefined || p.len !== undefined);
    if (!list.some(byRef)) return { panes: list, filled: false };
    if (this.appliedSeq !== (Number(seq) || 0) || this.held.size) return null;
    const out: PaneSnapshot[] = [];
    for (const p of list) {
      if (!p || typeof p.key !== "string") continue;
      if (!byRef(p)) {
        out.push(p);
        continue;
      }
      const text = (this.panes.get(p.key)?.text ?? "") + (typeof p.tail === "string" ? p.tail : "");
      if (typeof p.len !== "number" || text.length !== p.len) return null;
      out.push({ key: p.key, predict: p.predict, field: p.field, text, done: p.done });
    }
    return { panes: out, filled: true };
  }

  /**
   * Replace the panes with a snapshot taken at `seq`, unless deltas newer than it were applied.
   * Returns the minimal changes when the snapshot only extends what is shown (the usual case),
   * else a single `reset`.
   */
  applySnapshot(snapshot: readonly PaneSnapshot[] | null | undefined, seq: number): ApplyResult {
    const s = Number(seq) || 0;
    if (s < this.appliedSeq) return { applied: false, changes: [], gap: false };
    const list = Array.isArray(snapshot) ? snapshot.filter((p) => p && typeof p.key === "string") : [];
    const old = this.list();
    let incremental = old.length <= list.length;
    for (let i = 0; incremental && i < old.length; i++) {
      const o = old[i];
      const n = list[i];
      if (o.key !== n.key || !(n.text ?? "").startsWith(o.text)) incremental = false;
    }
    const changes: Change[] = [];
    if (incremental) {
      for (const n of list) {
        const text = n.text ?? "";
        const done = !!n.done;
        let pane = this.panes.get(n.key);
        if (!pane) {
          pane = makePane(n.key, n.predict, n.field);
          this.panes.set(n.key, pane);
          changes.push({ kind: "add", key: n.key });
        }
        if (text.length > pane.text.length) {
          changes.push({ kind: "append", key: n.key, text: text.slice(pane.text.length) });
          pane.text = text;
        }
        if (pane.done !== done) {
          pane.done = done;
          changes.push({ kind: "done", key: n.key, done });
        }
      }
    } else {
      this.panes.clear();
      for (const n of list) {
        const pane = makePane(n.key, n.predict, n.field);
        pane.text = n.text ?? "";
        pane.done = !!n.done;
        this.panes.set(n.key, pane);
      }
      changes.push({ kind: "reset" });
    }
    this.appliedSeq = Math.max(this.appliedSeq, s);
    for (const k of [...this.held.keys()]) if (k <= this.appliedSeq) this.held.delete(k);
    this.drainHeld(changes);
    return { applied: true, changes, gap: false };
  }

  private drainHeld(changes: Change[]): void {
    while (this.held.size) {
      const next = this.held.get(this.appliedSeq + 1);
      if (!next) break;
      this.held.delete(this.appliedSeq + 1);
      this.applyItems(next.items, changes);
      this.appliedSeq += 1;
    }
  }

  private applyItems(items: unknown, changes: Change[]): void {
    if (!Array.isArray(items)) return;
    for (const item of items) {
      if (!isDeltaItem(item)) continue;
      const [key, text, done] = item;
      let pane = this.panes.get(key);
      if (!pane) {
        pane = makePane(key);
        this.panes.set(key, pane);
        changes.push({ kind: "add", key });
      }
      if (text) {
        pane.text += text;
        // Coalesce with the previous change when it appended to the same pane.
        const last = changes[changes.length - 1];
        if (last && last.kind === "append" && last.key === key) last.text += text;
        else changes.push({ kind: "append", key, text });
      }
      if (done && !pane.done) {
        pane.done = true;
        changes.push({ kind: "done", key, done: true });
      }
    }
  }
}

// ------------------------------------------------------------------------- text by reference

export function isPaneRef(x: unknown): x is PaneRef {
  return !!x && typeof x === "object" && !Array.isArray(x) && typeof (x as PaneRef).$pane === "string";
}

/** Whether `value` is a text in the kernel's compact form: a pane reference or a list of strings and references. */
export function isTextRef(value: unknown): boolean {
  return isPaneRef(value) || (Array.isArray(value) && value.every((p) => typeof p === "string" || isPaneRef(p)));
}

export interface Resolved {
  text: string;
  /** False when a referenced pane is missing or shorter than the reference (its text has not arrived yet). */
  complete: boolean;
}

/**
 * The text of a string, a pane reference or a list of strings and references, looking panes up with
 * `lookup`; `null` for any other value.
 */
export function resolveText(value: unknown, lookup: (key: string) => string | undefined): Resolved | null {
  if (typeof value === "string") return { text: value, complete: true };
  if (!isTextRef(value)) return null;
  const parts = Array.isArray(value) ? value : [value];
  let text = "";
  let complete = true;
  for (const part of parts) {
    if (typeof part === "string") {
      text += part;
      continue;
    }
    const ref = part as PaneRef;
    const pane = lookup(ref.$pane);
    const end = typeof ref.end === "number" && ref.end >= 0 ? ref.end : undefined;
    if (pane === undefined || (end !== undefined && pane.length < end)) complete = false;
    text += pane === undefined ? "" : pane.slice(0, end);
  }
  return { text, complete };
}

// ------------------------------------------------------------------------------------- stats

/** The status line's numbers: `"3.2 s · 120 tokens · 41.0 tok/s · TTFT 0.42 s"`. */
export function formatStats(stats: Stats | null | undefined, elapsedOverride?: number | null): string {
  const s = stats ?? {};
  const parts: string[] = [];
  const elapsed = elapsedOverride ?? s.elapsed;
  if (typeof elapsed === "number" && Number.isFinite(elapsed)) parts.push(`${Math.max(0, elapsed).toFixed(1)} s`);
  const tokens = typeof s.tokens === "number" ? s.tokens : 0;
  parts.push(`${tokens} token${tokens === 1 ? "" : "s"}`);
  if (typeof s.tokens_per_s === "number" && Number.isFinite(s.tokens_per_s) && s.tokens_per_s > 0) {
    parts.push(`${s.tokens_per_s.toFixed(1)} tok/s`);
  }
  if (typeof s.ttft === "number" && Number.isFinite(s.ttft)) parts.push(`TTFT ${s.ttft.toFixed(2)} s`);
  return parts.join(" · ");
}

// ----------------------------------------------------------------------------------- markdown
//
// A safe subset: paragraphs, ATX headings, fenced code, bullet/numbered lists (nesting by indent),
// block quotes, rules; inline **bold**, *italic*, `code`, line breaks. Links and images keep only
// their text. No HTML is ever interpreted: `<script>` is just text.

export type Inline =
  | { t: "text"; v: string }
  | { t: "code"; v: string }
  | { t: "strong"; c: Inline[] }
  | { t: "em"; c: Inline[] }
  | { t: "br" };

export interface ListItem {
  indent: number;
  ordered: boolean;
  start: number;
  c: Inline[];
}

export type Block =
  | { t: "p"; c: Inline[] }
  | { t: "h"; level: number; c: Inline[] }
  | { t: "code"; lang: string; v: string }
  | { t: "list"; items: ListItem[] }
  | { t: "quote"; c: Inline[] }
  | { t: "hr" };

const PUNCT = /[!-/:-@[-`{-~]/;
const SPACE = /\s/;
const WORD = /[\p{L}\p{N}]/u;
const LINK = /!?\[([^\]\n]*)\]\(([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+"[^"\n]*")?\)/y;

function closingDelim(s: string, from: number, ch: string, d: number): number {
  const delim = ch.repeat(d);
  let j = s.indexOf(delim, from);
  while (j >= 0) {
    const ok =
      j > from &&
      !SPACE.test(s[j - 1]) &&
      (d !== 1 || (s[j + 1] !== ch && s[j - 1] !== ch)) &&
      !(ch === "_" && j + d < s.length && WORD.test(s[j + d]));
    if (ok) return j;
    j = s.indexOf(delim, j + 1);
  }
  return -1;
}

/** Inline markdown -> a tree of strings. Never interprets HTML. */
export function parseInline(s: string, depth = 0): Inline[] {
  const out: Inline[] = [];
  let text = "";
  const flush = () => {
    if (text) {
      out.push({ t: "text", v: text });
      text = "";
    }
  };
  const n = s.length;
  let i = 0;
  while (i < n) {
    const ch = s[i];
    if (ch === "\\" && i + 1 < n && PUNCT.test(s[i + 1])) {
      text += s[i + 1];
      i += 2;
      continue;
    }
    if (ch === "\n") {
      flush();
      out.push({ t: "br" });
      i++;
      continue;
    }
    if (ch === "`") {
      let run = 1;
      while (s[i + run] === "`") run++;
      const fence = "`".repeat(run);
      let j = s.indexOf(fence, i + run);
      while (j >= 0 && s[j + run] === "`") {
        let k = j;
        while (s[k] === "`") k++;
        j = s.indexOf(fence, k);
      }
      if (j >= 0) {
        flush();
        let code = s.slice(i + run, j).replace(/\n/g, " ");
        if (code.length > 2 && code[0] === " " && code[code.length - 1] === " ") code = code.slice(1, -1);
        out.push({ t: "code", v: code });
        i = j + run;
        continue;
      }
      text += fence;
      i += run;
      continue;
    }
    if ((ch === "*" || ch === "_") && depth < 16) {
      let run = 1;
      while (s[i + run] === ch) run++;
      const prev = i > 0 ? s[i - 1] : " ";
      const next = i + run < n ? s[i + run] : " ";
      const canOpen = !SPACE.test(next) && !(ch === "_" && WORD.test(prev));
      if (canOpen) {
        const d = Math.min(run, 3);
        const close = closingDelim(s, i + d, ch, d);
        if (close >= 0) {
          flush();
          const inner = parseInline(s.slice(i + d, close), depth + 1);
          if (d === 1) out.push({ t: "em", c: inner });
          else if (d === 2) out.push({ t: "strong", c: inner });
          else out.push({ t: "strong", c: [{ t: "em", c: inner }] });
          text += ch.repeat(run - d);
          i = close + d;
          continue;
        }
      }
      text += ch.repeat(run);
      i += run;
      continue;
    }
    if (ch === "[" || (ch === "!" && s[i + 1] === "[")) {
      LINK.lastIndex = i;
      const m = LINK.exec(s);
      if (m) {
        // A link or image keeps only its text: no href, no src.
        flush();
        out.push(...parseInline(m[1], depth + 1));
        i = LINK.lastIndex;
        continue;
      }
    }
    text += ch;
    i++;
  }
  flush();
  return out;
}

type Open =
  | { t: "p"; lines: string[] }
  | { t: "code"; ch: string; len: number; lang: string; lines: string[] }
  | { t: "list"; items: { indent: number; ordered: boolean; start: number; lines: string[] }[] }
  | { t: "quote"; lines: string[] };

const BLANK = /^\s*$/;
const FENCE_OPEN = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const FENCE_CLOSE = /^ {0,3}(`{3,}|~{3,})[ \t]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const ITEM = /^([ \t]*)([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;
const QUOTE = /^ {0,3}>[ \t]?(.*)$/;

function indentWidth(ws: string): number {
  let w = 0;
  for (const c of ws) w += c === "\t" ? 4 : 1;
  return w;
}

function closeBlock(o: Open): Block {
  switch (o.t) {
    case "p":
      return { t: "p", c: parseInline(o.lines.map((l) => l.trim()).join("\n")) };
    case "code":
      return { t: "code", lang: o.lang, v: o.lines.join("\n") };
    case "quote":
      return { t: "quote", c: parseInline(o.lines.map((l) => l.trim()).join("\n")) };
    case "list":
      return {
        t: "list",
        items: o.items.map((it) => ({
          indent: it.indent,
          ordered: it.ordered,
          start: it.start,
          c: parseInline(it.lines.map((l) => l.trim()).join("\n")),
        })),
      };
  }
}

/** Feed one complete line; returns the new open block; pushes closed blocks to `emit`. */
function step(open: Open | null, line: string, emit: Block[]): Open | null {
  if (open?.t === "code") {
    const c = FENCE_CLOSE.exec(line);
    if (c && c[1][0] === open.ch && c[1].length >= open.len) {
      emit.push(closeBlock(open));
      return null;
    }
    open.lines.push(line);
    return open;
  }
  if (BLANK.test(line)) {
    if (open) emit.push(closeBlock(open));
    return null;
  }
  let m = FENCE_OPEN.exec(line);
  if (m) {
    if (open) emit.push(closeBlock(open));
    return { t: "code", ch: m[1][0], len: m[1].length, lang: m[2] ?? "", lines: [] };
  }
  m = HEADING.exec(line);
  if (m) {
    if (open) emit.push(closeBlock(open));
    emit.push({ t: "h", level: m[1].length, c: parseInline((m[2] ?? "").trim()) });
    return null;
  }
  if (RULE.test(line)) {
    if (open) emit.push(closeBlock(open));
    emit.push({ t: "hr" });
    return null;
  }
  m = ITEM.exec(line);
  if (m) {
    const indent = indentWidth(m[1]);
    const ordered = /\d/.test(m[2][0]);
    const item = { indent, ordered, start: ordered ? parseInt(m[2], 10) : 1, lines: [m[3]] };
    if (open?.t === "list") {
      const first = open.items[0];
      // A top-level item of the other kind starts a new list.
      if (indent > first.indent || ordered === first.ordered) {
        open.items.push(item);
        return open;
      }
    }
    if (open) emit.push(closeBlock(open));
    return { t: "list", items: [item] };
  }
  m = QUOTE.exec(line);
  if (m) {
    if (open?.t === "quote") {
      open.lines.push(m[1]);
      return open;
    }
    if (open) emit.push(closeBlock(open));
    return { t: "quote", lines: [m[1]] };
  }
  if (open?.t === "p") {
    open.lines.push(line);
    return open;
  }
  if (open?.t === "list" && /^[ \t]/.test(line)) {
    open.items[open.items.length - 1].lines.push(line);
    return open;
  }
  if (open) emit.push(closeBlock(open));
  return { t: "p", lines: [line] };
}

function cloneOpen(o: Open | null): Open | null {
  if (!o) return null;
  switch (o.t) {
    case "list":
      return { t: "list", items: o.items.map((it) => ({ ...it, lines: [...it.lines] })) };
    default:
      return { ...o, lines: [...o.lines] } as Open;
  }
}

/**
 * Markdown parsed as it streams. `feed(delta)` returns the blocks that this delta closed (they never
 * change again); `tail()` is what the still-open block and the partial last line look like now.
 * `[...all closed blocks, ...tail()]` equals `parseMarkdown(text so far)`.
 */
export class MarkdownStream {
  private buf = "";
  private open: Open | null = null;
  private done: Block[] = [];

  feed(delta: string): Block[] {
    const out: Block[] = [];
    let nl = delta.indexOf("\n");
    if (nl < 0) {
      this.buf += delta;
      return out;
    }
    this.open = step(this.open, stripCR(this.buf + delta.slice(0, nl)), out);
    let start = nl + 1;
    while ((nl = delta.indexOf("\n", start)) >= 0) {
      this.open = step(this.open, stripCR(delta.slice(start, nl)), out);
      start = nl + 1;
    }
    this.buf = delta.slice(start);
    for (const b of out) this.done.push(b);
    return out;
  }

  /** The blocks that are still open (re-render these on each frame). */
  tail(): Block[] {
    const out: Block[] = [];
    let open = this.open;
    if (this.buf) open = step(cloneOpen(open), stripCR(this.buf), out);
    if (open) out.push(closeBlock(open));
    return out;
  }

  /** Every closed block so far. */
  closed(): Block[] {
    return this.done;
  }
}

function stripCR(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

/** Parse a whole text. */
export function parseMarkdown(text: string): Block[] {
  const md = new MarkdownStream();
  md.feed(text);
  return [...md.closed(), ...md.tail()];
}
