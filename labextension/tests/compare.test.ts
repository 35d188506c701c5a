// @vitest-environment jsdom
import { afterEach, describe, expect, it } from "vitest";
import { FakeModel, renderView } from "./fake_model";

const frame = () => new Promise<void>((r) => requestAnimationFrame(() => r()));
const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

const SEP = "\x1f";
const variants = (status = "running", extra: Record<string, any> = {}) => [
  { label: "model=a", model: "a", status, error: "", message: "", stats: {}, prediction: {}, ...extra },
  { label: "model=b", model: "b", status, error: "", message: "", stats: {}, prediction: {} },
  { label: "model=c", model: "c", status, error: "", message: "", stats: {}, prediction: {} },
];

function mountCompare() {
  const model = new FakeModel({ title: "compare", model_name: "3 variants", variants: [], diff: [] });
  const el = renderView(model, cleanups);
  model.update({ status: "running", variants: variants() });
  return { model, el };
}

const cell = (el: HTMLElement, key: string) => el.querySelector<HTMLElement>(`.jps-pane[data-key="${key}"]`)!;

describe("a comparison: a column per variant", () => {
  it("puts each variant's panes in its column, the same field of every variant on one row", async () => {
    const { model, el } = mountCompare();
    const heads = [...el.querySelectorAll<HTMLElement>(".jps-variant")];
    expect(heads.map((h) => h.dataset.variant)).toEqual(["model=a", "model=b", "model=c"]);
    expect(heads.map((h) => h.style.gridColumn)).toEqual(["1", "2", "3"]);
    expect(el.querySelector<HTMLElement>(".jps-panes")!.style.gridTemplateColumns).toBe("repeat(3, minmax(0, 1fr))");
    // b streams first, then a; a's second field first: rows follow the first variant to show each field.
    model.deltas([`model=b${SEP}.reasoning`, "Think", false], [`model=a${SEP}.answer`, "Par", false]);
    model.deltas([`model=a${SEP}.reasoning`, "Hmm", true], [`model=b${SEP}.answer`, "Lyon", true]);
    await frame();
    const row = (key: string) => cell(el, key).style.gridRow;
    const col = (key: string) => cell(el, key).style.gridColumn;
    expect(row(`model=a${SEP}.reasoning`)).toBe(row(`model=b${SEP}.reasoning`));
    expect(row(`model=a${SEP}.answer`)).toBe(row(`model=b${SEP}.answer`));
    expect(row(`model=a${SEP}.answer`)).not.toBe(row(`model=a${SEP}.reasoning`));
    expect([col(`model=a${SEP}.answer`), col(`model=b${SEP}.answer`)]).toEqual(["1", "2"]);
    // The pane's label names the field only: the column names the variant.
    expect(cell(el, `model=b${SEP}.answer`).querySelector(".jps-pane-name")!.textContent).toBe("answer");
    expect(cell(el, `model=b${SEP}.answer`).querySelector(".jps-pane-text")!.textContent).toBe("Lyon");
  });

  it("labels a row per call group, spanning the columns", async () => {
    const { model, el } = mountCompare();
    model.deltas([`model=a${SEP}react.next_thought`, "go", false], [`model=c${SEP}react[2].next_thought`, "more", false]);
    await frame();
    const labels = [...el.querySelectorAll<HTMLElement>(".jps-row-label")];
    expect(labels.map((l) => [l.textContent, l.style.gridColumn])).toEqual([["react", "1 / -1"], ["react[2]", "1 / -1"]]);
    expect(cell(el, `model=c${SEP}react[2].next_thought`).style.gridColumn).toBe("3");
  });

  it("shows each variant's status, live stats and error in its header", async () => {
    const { model, el } = mountCompare();
    model.custom({ type: "deltas", seq: ++model.seq, items: [], stats: { tokens: 9, elapsed: 1 },
      vstats: { "model=a": { tokens: 5, elapsed: 1, tokens_per_s: 5 }, "model=b": { tokens: 4, elapsed: 1 } } });
    const head = (label: string) => el.querySelector<HTMLElement>(`.jps-variant[data-variant="${label}"]`)!;
    expect(head("model=a").querySelector(".jps-stats")!.textContent).toContain("5 tok");
    expect(head("model=b").querySelector(".jps-stats")!.textContent).toContain("4 tok");
    model.update({ variants: variants("running").map((v) => v.label === "model=c"
      ? { ...v, status: "error", error: "RateLimitError: slow down" } : v) });
    expect(head("model=c").dataset.status).toBe("error");
    expect(head("model=c").querySelector(".jps-error")!.textContent).toBe("RateLimitError: slow down");
    expect(head("model=a").querySelector<HTMLElement>(".jps-error")!.hidden).toBe(true);
    expect(head("model=a").querySelector(".jps-model")!.textContent).toBe("a");
  });

  it("renders the word diff at the end as text, never HTML", async () => {
    const { model, el } = mountCompare();
    expect(el.querySelector<HTMLElement>(".jps-diff")!.hidden).toBe(true);
    model.update({ status: "done", diff: [
      { field: "answer", a: "model=a", b: "model=b", ops: [["=", "Paris is "], ["-", "<b>the</b>"], ["+", "a"], ["=", " city."]] },
      { field: "reasoning", a: "model=a", b: "model=c", ops: [["=", "same"]] },
    ] });
    const diff = el.querySelector<HTMLElement>(".jps-diff")!;
    expect(diff.hidden).toBe(false);
    const text = diff.querySelector(".jps-diff-field[data-field='answer'] .jps-diff-text")!;
    expect(text.querySelector("del")!.textContent).toBe("<b>the</b>");
    expect(text.querySelector("ins")!.textContent).toBe("a");
    expect(text.querySelector("b")).toBeNull();
    expect(text.textContent).toBe("Paris is <b>the</b>a city.");
    expect(diff.querySelector(".jps-diff-field[data-field='reasoning']")!.textContent).toContain("the same");
  });

  it("shows the predictions a value per variant, and one Stop for all", async () => {
    const { model, el } = mountCompare();
    model.update({ variants: variants("done", { prediction: { fields: { answer: "Paris" } } }) });
    const values = [...el.querySelectorAll<HTMLElement>(".jps-prediction .jps-variant-value")];
    expect(values.map((v) => [v.dataset.variant, v.querySelector("pre")!.textContent]))
      .toEqual([["model=a", "Paris"], ["model=b", "\u2014"], ["model=c", "\u2014"]]);
    el.querySelector<HTMLButtonElement>(".jps-stop")!.click();
    expect(model.requests).toEqual([{ type: "stop" }]);
    expect(el.querySelectorAll(".jps-stop").length).toBe(1);
  });
});

describe("diff with the previous run of this cell", () => {
  it("is hidden until the kernel sets it, then lists each block as text", () => {
    const model = new FakeModel({ status: "done" });
    const el = renderView(model, cleanups);
    const box = el.querySelector<HTMLDetailsElement>(".jps-rundiff")!;
    expect(box.hidden).toBe(true);
    model.update({ run_diff: { title: "#1 \u2192 #2", changed: true, blocks: [
      { heading: "setting temperature: 0 -> 0.7", pieces: [] },
      { heading: "prompt, LM call 1 (predict), message 1 (system):", pieces: [["-", "Be brief."], ["+", "<i>Be kind.</i>"]] },
      { heading: "output answer:", pieces: [["=", "Paris"], ["-", " is the capital"], ["=", "."]] },
    ] } });
    expect(box.hidden).toBe(false);
    expect(box.open).toBe(false);
    expect(box.querySelector("summary")!.textContent).toBe("Diff with the previous run of this cell (#1 \u2192 #2)");
    const blocks = [...box.querySelectorAll(".jps-diff-field")];
    expect(blocks.map((b) => b.querySelector(".jps-field-name")!.textContent)).toEqual([
      "setting temperature: 0 -> 0.7", "prompt, LM call 1 (predict), message 1 (system):", "output answer:"]);
    expect(blocks[0].querySelector(".jps-diff-text")).toBeNull();
    expect(blocks[1].querySelector("ins")!.textContent).toBe("+<i>Be kind.</i>\n");
    expect(blocks[1].querySelector("i")).toBeNull();
    expect(blocks[2].querySelector(".jps-diff-text")!.textContent).toBe("Paris is the capital.");
    expect(blocks[2].querySelector("del")!.textContent).toBe(" is the capital");
    model.update({ run_diff: { title: "#2 \u2192 #3", changed: false, blocks: [] } });
    expect(box.querySelector("summary")!.textContent).toBe("Diff with the previous run of this cell (#2 \u2192 #3): no change");
    expect(box.querySelectorAll(".jps-diff-field").length).toBe(0);
  });
});

describe("a comparison's predictions by reference", () => {
  it("resolves a variant's field from its pane", async () => {
    const { model, el } = mountCompare();
    model.deltas([`model=a${SEP}.answer`, "A long answer that went by reference.", true]);
    model.update({ variants: variants("done", { prediction: { fields: { answer: { $pane: `model=a${SEP}.answer` } } } }) });
    const a = el.querySelector<HTMLElement>(".jps-prediction .jps-variant-value[data-variant='model=a'] pre")!;
    expect(a.textContent).toBe("A long answer that went by reference.");
  });
});
