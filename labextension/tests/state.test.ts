import { describe, expect, it } from "vitest";
import {
  type Block,
  type Change,
  type DeltaItem,
  MarkdownStream,
  StreamState,
  formatStats,
  isReasoningField,
  parseInline,
  parseMarkdown,
  resolveText,
  splitKey,
} from "../src/state";

const batch = (seq: number, items: DeltaItem[]) => ({ type: "deltas" as const, seq, items });
const texts = (s: StreamState) => Object.fromEntries(s.list().map((p) => [p.key, p.text]));
const dones = (s: StreamState) => Object.fromEntries(s.list().map((p) => [p.key, p.done]));

/** Replays changes the way a view does, to check they reproduce the state. */
function replay(view: Map<string, string>, state: StreamState, changes: Change[]): void {
  for (const c of changes) {
    if (c.kind === "reset") {
      view.clear();
      for (const p of state.list()) view.set(p.key, p.text);
      return;
    }
    if (c.kind === "add") view.set(c.key, "");
    if (c.kind === "append") view.set(c.key, (view.get(c.key) ?? "") + c.text);
  }
}

describe("StreamState deltas", () => {
  it("applies batches in order and creates panes on first sight, split on the last dot", () => {
    const s = new StreamState();
    expect(s.applyDeltas(batch(1, [["predict.reasoning", "It is", false]])).applied).toBe(true);
    s.applyDeltas(batch(2, [["predict.reasoning", " in France.", true], ["step.gen.answer", "Par", false]]));
    s.applyDeltas(batch(3, [["step.gen.answer", "is", true]]));
    expect(texts(s)).toEqual({ "predict.reasoning": "It is in France.", "step.gen.answer": "Paris" });
    expect(s.list().map((p) => [p.predict, p.field])).toEqual([["predict", "reasoning"], ["step.gen", "answer"]]);
    expect(s.appliedSeq).toBe(3);
  });

  it("ignores a duplicated or older batch", () => {
    const s = new StreamState();
    s.applyDeltas(batch(1, [["p.a", "x", false]]));
    s.applyDeltas(batch(2, [["p.a", "y", false]]));
    const again = s.applyDeltas(batch(2, [["p.a", "y", false]]));
    const older = s.applyDeltas(batch(1, [["p.a", "x", false]]));
    expect(again.applied).toBe(false);
    expect(older.applied).toBe(false);
    expect(again.changes).toEqual([]);
    expect(texts(s)).toEqual({ "p.a": "xy" });
  });

  it("sets done flags once and reports them as changes", () => {
    const s = new StreamState();
    const r1 = s.applyDeltas(batch(1, [["p.a", "x", false], ["p.b", "", true]]));
    expect(dones(s)).toEqual({ "p.a": false, "p.b": true });
    expect(r1.changes).toEqual([
      { kind: "add", key: "p.a" },
      { kind: "append", key: "p.a", text: "x" },
      { kind: "add", key: "p.b" },
      { kind: "done", key: "p.b", done: true },
    ]);
    const r2 = s.applyDeltas(batch(2, [["p.a", "y", true], ["p.b", "", true]]));
    expect(r2.changes).toEqual([
      { kind: "append", key: "p.a", text: "y" },
      { kind: "done", key: "p.a", done: true },
    ]);
  });

  it("holds a batch that skips a seq until a snapshot covers the gap", () => {
    const s = new StreamState();
    s.applySnapshot([{ key: "p.a", text: "abc" }], 3);
    const r = s.applyDeltas(batch(6, [["p.a", "g", false]]));
    expect(r).toMatchObject({ applied: false, gap: true });
    expect(texts(s)).toEqual({ "p.a": "abc" });
    const r2 = s.applyDeltas(batch(7, [["p.a", "h", false]]));
    expect(r2.applied).toBe(false);
    // The kernel answers with a snapshot at seq 5 (it contains everything up to batch 5).
    s.applySnapshot([{ key: "p.a", text: "abcdef" }], 5);
    expect(texts(s)).toEqual({ "p.a": "abcdefgh" });
    expect(s.appliedSeq).toBe(7);
    expect(s.heldCount).toBe(0);
  });
});

describe("StreamState snapshots", () => {
  it("snapshot after deltas: already-applied text is not applied twice", () => {
    const s = new StreamState();
    s.applyDeltas(batch(1, [["p.answer", "Pa", false]]));
    s.applyDeltas(batch(2, [["p.answer", "ri", false]]));
    const r = s.applySnapshot([{ key: "p.answer", predict: "p", field: "answer", text: "Pari", done: false }], 2);
    expect(r.applied).toBe(true);
    expect(r.changes).toEqual([]);
    expect(texts(s)).toEqual({ "p.answer": "Pari" });
    // The batches the snapshot contains are now stale.
    expect(s.applyDeltas(batch(2, [["p.answer", "ri", false]])).applied).toBe(false);
    expect(texts(s)).toEqual({ "p.answer": "Pari" });
  });

  it("deltas after a snapshot append to it", () => {
    const s = new StreamState();
    s.applySnapshot([{ key: "p.answer", text: "Par", done: false }], 4);
    expect(s.appliedSeq).toBe(4);
    expect(s.applyDeltas(batch(4, [["p.answer", "Par", false]])).applied).toBe(false);
    s.applyDeltas(batch(5, [["p.answer", "is", true]]));
    expect(texts(s)).toEqual({ "p.answer": "Paris" });
    expect(dones(s)).toEqual({ "p.answer": true });
  });

  it("ignores a snapshot older than the deltas already applied", () => {
    const s = new StreamState();
    for (let i = 1; i <= 5; i++) s.applyDeltas(batch(i, [["p.a", String(i), false]]));
    const r = s.applySnapshot([{ key: "p.a", text: "12", done: false }], 2);
    expect(r.applied).toBe(false);
    expect(texts(s)).toEqual({ "p.a": "12345" });
    expect(s.appliedSeq).toBe(5);
  });

  it("a snapshot that extends the panes yields appends; one that does not yields a reset", () => {
    const s = new StreamState();
    s.applyDeltas(batch(1, [["p.a", "ab", false]]));
    const ext = s.applySnapshot(
      [
        { key: "p.a", text: "abcd", done: true },
        { key: "p.b", text: "z", done: false },
      ],
      3,
    );
    expect(ext.changes).toEqual([
      { kind: "append", key: "p.a", text: "cd" },
      { kind: "done", key: "p.a", done: true },
      { kind: "add", key: "p.b" },
      { kind: "append", key: "p.b", text: "z" },
    ]);
    // A new run on the same widget: empty snapshot at the current seq clears everything.
    const cleared = s.applySnapshot([], 3);
    expect(cleared.changes).toEqual([{ kind: "reset" }]);
    expect(s.size).toBe(0);
    const diff = s.applySnapshot([{ key: "q.x", text: "new" }], 3);
    expect(diff.changes.map((c) => c.kind)).toEqual(["add", "append"]);
    const other = s.applySnapshot([{ key: "q.x", text: "different" }], 3);
    expect(other.changes).toEqual([{ kind: "reset" }]);
    expect(texts(s)).toEqual({ "q.x": "different" });
  });

  it("a page reload shows the full text from the snapshot alone", () => {
    const s = new StreamState();
    s.applySnapshot(
      [
        { key: "predict.reasoning", predict: "predict", field: "reasoning", text: "Because.", done: true },
        { key: "predict.answer", predict: "predict", field: "answer", text: "42", done: true },
      ],
      17,
    );
    expect(texts(s)).toEqual({ "predict.reasoning": "Because.", "predict.answer": "42" });
    expect(s.get("predict.reasoning")!.reasoning).toBe(true);
    expect(s.get("predict.answer")!.reasoning).toBe(false);
    expect(s.appliedSeq).toBe(17);
  });

  it("changes replayed by a view always reproduce the state (random interleavings)", () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 50; round++) {
      // The kernel side: the truth after each batch.
      const keys = ["a.x", "a.y", "b.reasoning"];
      const truth: Record<string, string>[] = [{}];
      const batches: ReturnType<typeof batch>[] = [];
      const cur: Record<string, string> = {};
      for (let seq = 1; seq <= 30; seq++) {
        const items: DeltaItem[] = [];
        const n = 1 + Math.floor(rand() * 3);
        for (let k = 0; k < n; k++) {
          const key = keys[Math.floor(rand() * keys.length)];
          const t = String.fromCharCode(97 + Math.floor(rand() * 26)).repeat(1 + Math.floor(rand() * 3));
          items.push([key, t, false]);
          cur[key] = (cur[key] ?? "") + t;
        }
        batches.push(batch(seq, items));
        truth.push({ ...cur });
      }
      const order = (t: Record<string, string>) => t; // insertion order = first seen
      // The front end receives deltas (some duplicated) and snapshots at random points.
      const s = new StreamState();
      const view = new Map<string, string>();
      for (const b of batches) {
        replay(view, s, s.applyDeltas(b).changes);
        if (rand() < 0.2) replay(view, s, s.applyDeltas(b).changes);
        if (rand() < 0.25) {
          const at = Math.floor(rand() * (b.seq + 1));
          const snap = Object.entries(order(truth[at])).map(([key, text]) => ({ key, text }));
          replay(view, s, s.applySnapshot(snap, at).changes);
        }
      }
      expect(texts(s)).toEqual(cur);
      expect(Object.fromEntries(view)).toEqual(cur);
    }
  });
});

describe("helpers", () => {
  it("detects reasoning panes and splits keys", () => {
    expect(isReasoningField("reasoning")).toBe(true);
    expect(isReasoningField("answer")).toBe(false);
    expect(splitKey("a.b.c")).toEqual({ predict: "a.b", field: "c" });
    expect(splitKey("answer")).toEqual({ predict: "", field: "answer" });
  });

  it("formats the stats line", () => {
    expect(formatStats({ elapsed: 3.21, tokens: 120, tokens_per_s: 41, ttft: 0.423 })).toBe(
      "3.2 s · 120 tokens · 41.0 tok/s · TTFT 0.42 s",
    );
    expect(formatStats({ elapsed: 1, tokens: 1, tokens_per_s: null, ttft: null }, 2.5)).toBe("2.5 s · 1 token");
    expect(formatStats(undefined)).toBe("0 tokens");
  });
});

// ------------------------------------------------------------------------------------ markdown

function flatText(nodes: unknown): string {
  return JSON.stringify(nodes);
}

describe("markdown parser", () => {
  it("keeps HTML as plain text", () => {
    const blocks = parseMarkdown('<script>alert(1)</script>\n\n<img src=x onerror="alert(2)">');
    expect(blocks).toEqual([
      { t: "p", c: [{ t: "text", v: "<script>alert(1)</script>" }] },
      { t: "p", c: [{ t: "text", v: '<img src=x onerror="alert(2)">' }] },
    ]);
  });

  it("parses inline bold, italic, code, breaks; links keep only their text", () => {
    expect(parseInline("a **b** *c* `<d>` e")).toEqual([
      { t: "text", v: "a " },
      { t: "strong", c: [{ t: "text", v: "b" }] },
      { t: "text", v: " " },
      { t: "em", c: [{ t: "text", v: "c" }] },
      { t: "text", v: " " },
      { t: "code", v: "<d>" },
      { t: "text", v: " e" },
    ]);
    expect(parseInline("[click](javascript:alert(1)) ![pic](x.png)")).toEqual([
      { t: "text", v: "click" },
      { t: "text", v: " " },
      { t: "text", v: "pic" },
    ]);
    expect(flatText(parseInline("[x](javascript:alert(1))"))).not.toContain("javascript");
    expect(parseInline("2 * 3 * 4 and snake_case_name")).toEqual([{ t: "text", v: "2 * 3 * 4 and snake_case_name" }]);
    expect(parseInline("**open")).toEqual([{ t: "text", v: "**open" }]);
    expect(parseInline("a\nb")).toEqual([{ t: "text", v: "a" }, { t: "br" }, { t: "text", v: "b" }]);
    expect(parseInline("\\*x\\*")).toEqual([{ t: "text", v: "*x*" }]);
  });

  it("parses headings, fenced code, lists, quotes and rules", () => {
    const md = [
      "# Title",
      "",
      "Some *text*",
      "more",
      "",
      "```python",
      "x = '<b>'",
      "",
      "print(x)",
      "```",
      "- one",
      "- two",
      "  - nested",
      "1. first",
      "> quoted",
      "---",
    ].join("\n");
    const blocks = parseMarkdown(md);
    expect(blocks.map((b) => b.t)).toEqual(["h", "p", "code", "list", "list", "quote", "hr"]);
    expect(blocks[0]).toEqual({ t: "h", level: 1, c: [{ t: "text", v: "Title" }] });
    expect(blocks[2]).toEqual({ t: "code", lang: "python", v: "x = '<b>'\n\nprint(x)" });
    const list = blocks[3] as Extract<Block, { t: "list" }>;
    expect(list.items.map((i) => [i.indent, i.ordered])).toEqual([[0, false], [0, false], [2, false]]);
    expect((blocks[4] as Extract<Block, { t: "list" }>).items[0].ordered).toBe(true);
  });

  it("an unclosed fence stays a code block while it streams", () => {
    expect(parseMarkdown("```\n<script>")).toEqual([{ t: "code", lang: "", v: "<script>" }]);
  });

  it("streaming in any pieces gives the same blocks as parsing the whole", () => {
    const md =
      "# H\nIntro **bold** and `code`.\n\n```js\nlet a = 1;\n\nlet b = 2;\n```\n\n- a\n- b\n  - c\n\n1. x\n2. y\n\n> q\n> r\n\nend *it*";
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 30; round++) {
      const md2 = new MarkdownStream();
      let i = 0;
      const seen: Block[] = [];
      while (i < md.length) {
        const n = 1 + Math.floor(rand() * 6);
        seen.push(...md2.feed(md.slice(i, i + n)));
        i += n;
        // The tail at any moment equals the parse of the prefix minus the closed blocks.
        expect([...md2.closed(), ...md2.tail()]).toEqual(parseMarkdown(md.slice(0, Math.min(i, md.length))));
      }
      expect(seen).toEqual(md2.closed());
      expect([...seen, ...md2.tail()]).toEqual(parseMarkdown(md));
    }
  });
});

describe("resolveText (text sent by reference to a pane)", () => {
  const panes: Record<string, string> = { "p.answer": "Paris😀 rocks", "p.reasoning": "Because." };
  const lookup = (k: string) => panes[k];

  it("strings, whole panes, prefixes of panes, and lists of them", () => {
    expect(resolveText("plain", lookup)).toEqual({ text: "plain", complete: true });
    expect(resolveText({ $pane: "p.answer" }, lookup)).toEqual({ text: "Paris😀 rocks", complete: true });
    // `end` counts UTF-16 code units, as Python computes it: the emoji is two.
    expect(resolveText({ $pane: "p.answer", end: 7 }, lookup)).toEqual({ text: "Paris😀", complete: true });
    expect(resolveText(["[[ ## a ## ]]\n", { $pane: "p.reasoning", end: 8 }, "\n"], lookup)).toEqual({
      text: "[[ ## a ## ]]\nBecause.\n",
      complete: true,
    });
  });

  it("missing or short panes are reported incomplete; other values are not text", () => {
    expect(resolveText({ $pane: "p.nope" }, lookup)).toEqual({ text: "", complete: false });
    expect(resolveText(["a", { $pane: "p.reasoning", end: 20 }], lookup)).toEqual({ text: "aBecause.", complete: false });
    expect(resolveText({ city: "Paris" }, lookup)).toBeNull();
    expect(resolveText(["a", 1], lookup)).toBeNull();
    expect(resolveText(42, lookup)).toBeNull();
    expect(resolveText(null, lookup)).toBeNull();
  });
});
