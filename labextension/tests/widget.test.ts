// @vitest-environment jsdom
import { afterEach, describe, expect, it } from "vitest";
import widget, { PaneView, adoptStylesheet, controllerFor, renderBlocks, useStylesheet } from "../src/widget";
import { parseMarkdown } from "../src/state";
import { FakeModel, renderView } from "./fake_model";


const frame = () => new Promise<void>((r) => requestAnimationFrame(() => r()));
const cleanups: (() => void)[] = [];

/** A model created as the kernel opens it (idle), shown, then its stream started, unless `created` says how it was created. */
function mount(attrs: Record<string, any> = {}, created?: Record<string, any>) {
  const model = new FakeModel(created ?? attrs);
  const el = renderView(model, cleanups);
  if (!created) model.update({ status: "running", ...attrs });
  return { model, el };
}

afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

const pane = (el: HTMLElement, key: string) => el.querySelector<HTMLElement>(`.jps-pane[data-key="${key}"]`);
const paneText = (el: HTMLElement, key: string) => pane(el, key)?.querySelector(".jps-pane-text")?.textContent;

describe("StreamWidget view", () => {
  it("renders header, status, stop button with the stable class names", () => {
    const { el } = mount({ status_message: "Calling the LM…" });
    for (const cls of [".jps-widget", ".jps-header", ".jps-status", ".jps-status-message", ".jps-stats", ".jps-log",
      ".jps-prediction", ".jps-inspector", ".jps-stop", ".jps-error"]) {
      expect(el.querySelector(cls), cls).not.toBeNull();
    }
    expect(el.querySelector(".jps-header")!.textContent).toContain("predict");
    expect(el.querySelector(".jps-header")!.textContent).toContain("gpt-4o-mini");
    expect(el.querySelector(".jps-status-message")!.textContent).toBe("Calling the LM…");
    expect(el.querySelector<HTMLButtonElement>(".jps-stop")!.disabled).toBe(false);
  });

  it("messages that arrive before the first view are kept (listener in initialize)", async () => {
    const model = new FakeModel();
    const disposeInit = widget.initialize({ model });
    model.custom({ type: "deltas", seq: 1, items: [["predict.answer", "early ", false]] });
    model.custom({ type: "deltas", seq: 2, items: [["predict.answer", "bird", true]] });
    const el = document.createElement("div");
    const disposeView = widget.render({ model, el });
    cleanups.push(() => (disposeView(), disposeInit()));
    expect(paneText(el, "predict.answer")).toBe("early bird");
    expect(pane(el, "predict.answer")!.classList.contains("done")).toBe(true);
  });

  it("appends deltas per frame into one text node, marks done, groups by predictor", async () => {
    const { model, el } = mount();
    model.custom({ type: "deltas", seq: 1, items: [["predict.answer", "Pa", false]] });
    await frame();
    const textEl = pane(el, "predict.answer")!.querySelector(".jps-pane-text")!;
    const node = textEl.firstChild;
    expect(node?.nodeType).toBe(Node.TEXT_NODE);
    model.custom({ type: "deltas", seq: 2, items: [["predict.answer", "ri", false]] });
    model.custom({ type: "deltas", seq: 3, items: [["predict.answer", "s", true], ["step.gen.answer", "x", false]] });
    // Nothing touched the DOM yet: updates wait for the frame.
    expect(textEl.textContent).toBe("Pa");
    await frame();
    expect(textEl.textContent).toBe("Paris");
    expect(textEl.firstChild).toBe(node); // the same Text node, grown with appendData
    expect(textEl.childNodes.length).toBe(1);
    expect(pane(el, "predict.answer")!.classList.contains("done")).toBe(true);
    expect(pane(el, "step.gen.answer")!.classList.contains("done")).toBe(false);
    expect(pane(el, "predict.answer")!.querySelector(".jps-pane-label")!.textContent).toContain("predict.answer");
    const groups = [...el.querySelectorAll<HTMLElement>(".jps-group")].map((g) => g.dataset.predict);
    expect(groups).toEqual(["predict", "step.gen"]);
    // A duplicate batch changes nothing.
    model.custom({ type: "deltas", seq: 3, items: [["predict.answer", "s", true]] });
    await frame();
    expect(textEl.textContent).toBe("Paris");
  });

  it("shows a reasoning field in its own open <details>", async () => {
    const { model, el } = mount();
    model.custom({ type: "deltas", seq: 1, items: [["predict.reasoning", "Think.", false], ["predict.answer", "A", false]] });
    await frame();
    const r = pane(el, "predict.reasoning")!;
    expect(r.tagName).toBe("DETAILS");
    expect((r as HTMLDetailsElement).open).toBe(true);
    expect(r.classList.contains("jps-reasoning")).toBe(true);
    expect(pane(el, "predict.answer")!.tagName).toBe("DIV");
  });

  it("a snapshot replaces the panes; a second view and a reload show the full text from it", async () => {
    const { model, el } = mount();
    model.custom({ type: "deltas", seq: 1, items: [["p.a", "ab", false]] });
    model.update({ panes: [{ key: "p.a", predict: "p", field: "a", text: "abcd", done: true }], snapshot_seq: 2, status: "done" });
    await frame();
    expect(paneText(el, "p.a")).toBe("abcd");
    // Deltas already in the snapshot are not applied again.
    model.custom({ type: "deltas", seq: 2, items: [["p.a", "cd", true]] });
    await frame();
    expect(paneText(el, "p.a")).toBe("abcd");
    // A second view of the same model.
    const el2 = document.createElement("div");
    const dispose2 = widget.render({ model, el: el2 });
    cleanups.push(dispose2);
    expect(paneText(el2, "p.a")).toBe("abcd");
    // A reload: a fresh model holding only the saved traits (a finished stream asks for nothing).
    const saved = { panes: model.get("panes"), snapshot_seq: 2, status: "done" };
    const { model: m3, el: el3 } = mount({}, saved);
    expect(paneText(el3, "p.a")).toBe("abcd");
    expect(pane(el3, "p.a")!.classList.contains("done")).toBe(true);
    expect(m3.requests).toEqual([]);
  });

  it("asks the kernel for a snapshot when a batch skips a seq", () => {
    const { model } = mount({ panes: [{ key: "p.a", text: "x" }], snapshot_seq: 5 });
    expect(model.requests).toEqual([]); // a live model: created idle, nothing missed
    model.custom({ type: "deltas", seq: 9, items: [["p.a", "late", false]] });
    expect(model.requests).toEqual([{ type: "resync", seq: 5 }]);
    expect(controllerFor(model)!.state.get("p.a")!.text).toBe("x");
  });

  it("a model created while its stream runs (a reload mid-stream) asks for a snapshot at once, then catches up", async () => {
    const { model, el } = mount({}, { status: "running", panes: [{ key: "p.a", text: "ab" }], snapshot_seq: 3 });
    expect(model.requests).toEqual([{ type: "resync", seq: 3 }]);
    expect(paneText(el, "p.a")).toBe("ab");
    // Batches sent before our snapshot arrives are held back (they skip seqs 4-6), not re-requested at once.
    model.custom({ type: "deltas", seq: 7, items: [["p.a", "gh", false]] });
    expect(model.requests.length).toBe(1);
    model.update({ panes: [{ key: "p.a", text: "abcdef" }], snapshot_seq: 6 });
    await frame();
    expect(paneText(el, "p.a")).toBe("abcdefgh");
    expect(controllerFor(model)!.state.appliedSeq).toBe(7);
  });

  it("a final snapshot by reference is filled in from the deltas and set locally, for the saved state", async () => {
    const { model, el } = mount();
    expect(model.sent[0]).toEqual({ type: "hello" });
    model.custom({ type: "deltas", seq: 1, items: [["p.a", "ab", false], ["p.r", "x", false]] });
    model.custom({ type: "deltas", seq: 2, items: [["p.a", "c😀", false]] });
    model.update({
      status: "done", snapshot_seq: 2,
      panes: [
        { key: "p.r", predict: "p", field: "r", done: true, tail: "", len: 1 },
        { key: "p.a", predict: "p", field: "a", done: true, tail: "de", len: 7 },
        { key: "p.b", predict: "p", field: "b", done: true, tail: "only in the tail", len: 16 },
      ],
    });
    await frame();
    expect(model.requests).toEqual([]);
    expect(paneText(el, "p.a")).toBe("abc😀de");
    expect(paneText(el, "p.b")).toBe("only in the tail");
    expect(pane(el, "p.a")!.classList.contains("done")).toBe(true);
    // The model now holds the text (what JupyterLab saves), set locally, never sent to the kernel.
    expect(model.localSets.map(([k]) => k)).toEqual(["panes"]);
    expect(model.get("panes")).toEqual([
      { key: "p.r", predict: "p", field: "r", text: "x", done: true },
      { key: "p.a", predict: "p", field: "a", text: "abc😀de", done: true },
      { key: "p.b", predict: "p", field: "b", text: "only in the tail", done: true },
    ]);
    // A reload of the saved state shows it and asks for nothing.
    const { model: m2, el: el2 } = mount({}, { status: "done", snapshot_seq: 2, panes: model.get("panes") });
    expect(paneText(el2, "p.a")).toBe("abc😀de");
    expect(m2.requests).toEqual([]);
  });

  it("a final snapshot by reference that cannot be filled in (missed batch, wrong length, reload) asks for the text", async () => {
    const byRef = { status: "done", snapshot_seq: 3, panes: [{ key: "p.a", done: true, tail: "d", len: 4 }] };
    // Missed batch 2: held back, then the final snapshot by reference cannot be filled in.
    const { model, el } = mount();
    model.custom({ type: "deltas", seq: 1, items: [["p.a", "a", false]] });
    model.custom({ type: "deltas", seq: 3, items: [["p.a", "c", false]] });
    expect(model.requests).toEqual([{ type: "resync", seq: 1 }]);
    model.update(byRef); // within the resync throttle: asked again all the same
    expect(model.requests).toEqual([{ type: "resync", seq: 1 }, { type: "resync", seq: 1 }]);
    expect(model.localSets).toEqual([]);
    model.update({ panes: [{ key: "p.a", text: "abcd", done: true }] });
    await frame();
    expect(paneText(el, "p.a")).toBe("abcd");
    // Every batch, but the lengths disagree.
    const m2 = mount().model;
    m2.custom({ type: "deltas", seq: 1, items: [["p.a", "ab", false]] });
    m2.custom({ type: "deltas", seq: 2, items: [["p.a", "c", false]] });
    m2.custom({ type: "deltas", seq: 3, items: [["p.a", "x", false]] });
    m2.update({ ...byRef, panes: [{ key: "p.a", done: true, tail: "d", len: 9 }] });
    expect(m2.requests).toEqual([{ type: "resync", seq: 3 }]);
    // A page reloaded after the end: created from the kernel's state, no batch seen.
    const m3 = mount({}, byRef).model;
    expect(m3.requests).toEqual([{ type: "resync", seq: 0 }]);
    expect(m3.localSets).toEqual([]);
  });

  it("Stop sends {type: 'stop'} and is disabled once the stream is not running", () => {
    const { model, el } = mount();
    const stop = el.querySelector<HTMLButtonElement>(".jps-stop")!;
    stop.click();
    expect(model.requests).toEqual([{ type: "stop" }]);
    expect(stop.disabled).toBe(true);
    stop.click();
    expect(model.requests.length).toBe(1);
    model.update({ status: "stopped" });
    expect(stop.disabled).toBe(true);
    expect(el.querySelector(".jps-widget")!.getAttribute("data-status")).toBe("stopped");
    expect(el.querySelector(".jps-status")!.textContent).toContain("stopped");
  });

  it("shows errors, keeps partial text", async () => {
    const { model, el } = mount();
    model.custom({ type: "deltas", seq: 1, items: [["p.answer", "partial", false]] });
    await frame();
    model.update({ status: "error", error: "LMError: <b>boom</b>" });
    const err = el.querySelector<HTMLElement>(".jps-error")!;
    expect(err.hidden).toBe(false);
    expect(err.textContent).toBe("LMError: <b>boom</b>");
    expect(err.querySelector("b")).toBeNull();
    expect(paneText(el, "p.answer")).toBe("partial");
    expect(el.querySelector<HTMLButtonElement>(".jps-stop")!.disabled).toBe(true);
  });

  it("status log, stats, prediction and inspector", () => {
    const { model, el } = mount();
    model.update({ status_log: ["one", "two"], status_message: "two" });
    expect([...el.querySelectorAll(".jps-log li")].map((li) => li.textContent)).toEqual(["one", "two"]);
    model.update({ status_log: ["one", "two", "three"] });
    expect(el.querySelectorAll(".jps-log li").length).toBe(3);
    model.update({ status: "done", stats: { elapsed: 2, tokens: 10, tokens_per_s: 5, ttft: 0.5 } });
    expect(el.querySelector(".jps-stats")!.textContent).toBe("2.0 s · 10 tokens · 5.0 tok/s · TTFT 0.50 s");
    model.update({
      prediction: { fields: { answer: "Paris", n: "42", items: '[\n  1,\n  2\n]' }, usage: { m: { completion_tokens: 3 } } },
    });
    const pred = el.querySelector<HTMLDetailsElement>(".jps-prediction")!;
    expect(pred.hidden).toBe(false);
    expect(pred.tagName).toBe("DETAILS");
    expect([...pred.querySelectorAll(".jps-field-value")].map((x) => x.textContent)).toEqual([
      "Paris",
      "42",
      "[\n  1,\n  2\n]",
      JSON.stringify({ m: { completion_tokens: 3 } }, null, 2),
    ]);
    model.update({
      lm_calls: [
        {
          call_id: 1, predict: "predict", model: "m",
          messages: [{ role: "system", content: "Be <b>brief</b>" }, { role: "user", content: "Q?" }],
          raw: "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]", reasoning: "", usage: {}, ttft: 0.2, cached: false,
        },
      ],
    });
    const insp = el.querySelector<HTMLDetailsElement>(".jps-inspector")!;
    insp.open = true;
    insp.dispatchEvent(new Event("toggle"));
    expect([...insp.querySelectorAll(".jps-role")].map((r) => r.textContent)).toEqual(["system", "user", "reply (raw)"]);
    expect(insp.querySelector(".jps-msg-content")!.textContent).toBe("Be <b>brief</b>");
    expect(insp.querySelector("b")).toBeNull();
    expect(insp.querySelector(".jps-raw")!.textContent).toContain("[[ ## answer ## ]]");
  });

  it("live stats come in the batches; the snapshot's stats win once they are as new", () => {
    const { model, el } = mount({ snapshot_seq: 0, stats: { elapsed: 0, tokens: 0 } });
    const stats = () => el.querySelector(".jps-stats")!.textContent!;
    expect(stats()).toContain("0 tokens");
    model.custom({ type: "deltas", seq: 1, items: [["p.a", "x", false]], stats: { elapsed: 0.5, tokens: 12, tokens_per_s: 24, ttft: 0.1 } });
    expect(stats()).toContain("12 tokens · 24.0 tok/s · TTFT 0.10 s"); // at once, not at the next frame
    model.custom({ type: "deltas", seq: 2, items: [["p.a", "y", false]] }); // no stats: the last ones stay
    expect(stats()).toContain("12 tokens");
    model.custom({ type: "deltas", seq: 2, items: [], stats: { tokens: 99 } }); // a stale batch: ignored
    expect(stats()).toContain("12 tokens");
    // The end: the final snapshot at the last seq, with the final stats.
    model.update({ status: "done", snapshot_seq: 2, panes: [{ key: "p.a", text: "xy", done: true }],
      stats: { elapsed: 2, tokens: 20, tokens_per_s: 10, ttft: 0.1 } });
    expect(stats()).toBe("2.0 s · 20 tokens · 10.0 tok/s · TTFT 0.10 s");
  });

  it("prediction fields and raw replies sent by reference to a pane show the pane's text", async () => {
    const long = "Paris is the capital of France, on the Seine. ";
    const { model, el } = mount();
    model.custom({ type: "deltas", seq: 1, items: [["p.reasoning", "Think", false], ["p.answer", long, false]] });
    model.update({ lm_calls: [{ call_id: 1, predict: "p", model: "m", messages: [], done: true,
      raw: ["[[ ## answer ## ]]\n", { $pane: "p.answer", end: 5 }, "\n\n[[ ## completed ## ]]"] }] });
    const insp = el.querySelector<HTMLDetailsElement>(".jps-inspector")!;
    insp.open = true;
    insp.dispatchEvent(new Event("toggle"));
    // Only the first 5 UTF-16 units of the pane: the text the call wrote, even if the pane grew since.
    expect(insp.querySelector(".jps-raw")!.textContent).toBe("[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]");
    // The end: the final snapshot and the prediction by reference, in one update.
    model.update({
      status: "done", snapshot_seq: 1,
      panes: [{ key: "p.reasoning", text: "Think", done: true }, { key: "p.answer", text: long + "Yes.", done: true }],
      prediction: { fields: { reasoning: "Think", answer: { $pane: "p.answer" }, n: "42" }, usage: {} },
    });
    const values = [...el.querySelectorAll(".jps-prediction .jps-field-value")].map((x) => x.textContent);
    expect(values).toEqual(["Think", long + "Yes.", "42"]);
  });

  it("a reference to text that has not arrived yet is shown when it arrives", async () => {
    const { model, el } = mount();
    model.update({ lm_calls: [{ call_id: 1, predict: "p", done: true, raw: ["<", { $pane: "p.answer", end: 6 }, ">"] }] });
    const insp = el.querySelector<HTMLDetailsElement>(".jps-inspector")!;
    insp.open = true;
    insp.dispatchEvent(new Event("toggle"));
    expect(insp.querySelector(".jps-raw")!.textContent).toBe("<>\u2026");
    model.custom({ type: "deltas", seq: 1, items: [["p.answer", "Par", false]] });
    await frame();
    expect(insp.querySelector(".jps-raw")!.textContent).toBe("<Par>\u2026");
    model.custom({ type: "deltas", seq: 2, items: [["p.answer", "is!!", false]] });
    await frame();
    expect(insp.querySelector(".jps-raw")!.textContent).toBe("<Paris!>");
  });
});

describe("the stylesheet goes where the view is shown", () => {
  const styles = (root: Document | ShadowRoot) => {
    const adopted = (root as any).adoptedStyleSheets?.length ?? 0;
    const holder = root instanceof Document ? root.head : root;
    return adopted + holder.querySelectorAll("style[data-jps-style]").length;
  };

  it("into a shadow root (marimo) once, however many views, and not into the page", async () => {
    useStylesheet(".jps-widget { color: red }");
    const host = document.createElement("div");
    document.body.appendChild(host);
    const shadow = host.attachShadow({ mode: "open" });
    const before = styles(document);
    for (let i = 0; i < 2; i++) {
      const el = document.createElement("div");
      shadow.appendChild(el);
      const model = new FakeModel();
      cleanups.push(widget.render({ model, el }));
    }
    await frame();
    expect(styles(shadow)).toBe(1);
    expect(styles(document)).toBe(before);
    host.remove();
  });

  it("into the document when the view is attached after render", async () => {
    useStylesheet(".jps-widget { color: blue }");
    const el = document.createElement("div"); // not in the document yet
    expect(adoptStylesheet(el)).toBe(false);
    cleanups.push(widget.render({ model: new FakeModel(), el }));
    document.body.appendChild(el);
    await frame();
    await frame();
    expect(styles(document)).toBeGreaterThanOrEqual(1);
    el.remove();
  });
});

describe("prompt messages held in the kernel", () => {
  const preview = (n: number) => [{ call_id: 3, predict: "p", model: "m", done: true, raw: "r", held: n,
    messages: [{ role: "system", content: "sys" }, { role: "user", content: "x".repeat(2000), cut: n - 2003 }] }];
  const open = (el: HTMLElement) => {
    const insp = el.querySelector<HTMLDetailsElement>(".jps-inspector")!;
    insp.open = true;
    insp.dispatchEvent(new Event("toggle"));
    return insp;
  };

  it("asks for them once when the inspector shows the call, then shows them whole", () => {
    const { model, el } = mount();
    model.update({ lm_calls: preview(100_003) });
    expect(model.requests).toEqual([]); // not before the inspector is opened
    const insp = open(el);
    expect(model.requests).toEqual([{ type: "messages", call_id: 3 }]);
    expect(insp.querySelector(".jps-held")!.textContent).toContain("100,003 characters: loading");
    const contents = () => [...insp.querySelectorAll(".jps-msg-content")].map((x) => x.textContent);
    expect(contents()[1]).toBe("x".repeat(2000) + "\n\u2026 (98,000 more characters)");
    model.update({ lm_calls: [...preview(100_003)] }); // re-rendered: no second request
    expect(model.requests).toEqual([{ type: "messages", call_id: 3 }]);
    const whole = "y".repeat(100_000);
    model.custom({ type: "messages", call_id: 3, messages: [{ role: "system", content: "sys" }, { role: "user", content: whole }] });
    expect(contents()).toEqual(["sys", whole]);
    expect(insp.querySelector(".jps-held")).toBeNull();
    expect(model.localSets).toEqual([]); // kept out of the model's state: a saved notebook holds the preview
  });

  it("without a kernel the preview says what was saved", () => {
    const { model, el } = mount();
    model.send = () => { throw new Error("no kernel"); };
    model.update({ lm_calls: preview(70_000) });
    const insp = open(el);
    expect(insp.querySelector(".jps-held")!.textContent).toBe(
      "The prompt held 70,000 characters: only the start of each message was saved.");
  });

  it("held text is inert too", () => {
    const evil = '<img src=x onerror="window.__pwned = 3">';
    const { model, el } = mount();
    model.update({ lm_calls: preview(90_000) });
    const insp = open(el);
    model.custom({ type: "messages", call_id: 3, messages: [{ role: "user", content: evil }] });
    expect(insp.querySelector(".jps-msg-content")!.textContent).toBe(evil);
    expect(el.querySelector("img")).toBeNull();
  });
});

describe("safety: model text stays inert", () => {
  const evil = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">';

  it("plain panes", async () => {
    const { model, el } = mount();
    model.custom({ type: "deltas", seq: 1, items: [["p.answer", evil, true]] });
    model.update({ status_message: evil, status_log: [evil], title: evil });
    await frame();
    expect(paneText(el, "p.answer")).toBe(evil);
    expect(el.querySelector("script")).toBeNull();
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector(".jps-status-message")!.textContent).toBe(evil);
    expect((window as any).__pwned).toBeUndefined();
  });

  it("text by reference: prediction and raw reply", () => {
    const { model, el } = mount();
    model.update({
      status: "done", snapshot_seq: 0, panes: [{ key: "p.answer", text: evil, done: true }],
      prediction: { fields: { answer: { $pane: "p.answer" } } },
      lm_calls: [{ call_id: 1, predict: "p", done: true, raw: ["x", { $pane: "p.answer" }, "y"] }],
    });
    const insp = el.querySelector<HTMLDetailsElement>(".jps-inspector")!;
    insp.open = true;
    insp.dispatchEvent(new Event("toggle"));
    expect(el.querySelector(".jps-prediction .jps-field-value")!.textContent).toBe(evil);
    expect(insp.querySelector(".jps-raw")!.textContent).toBe(`x${evil}y`);
    expect(el.querySelector("script, img")).toBeNull();
    expect((window as any).__pwned).toBeUndefined();
  });

  it("markdown panes", async () => {
    const { model, el } = mount({ markdown: true });
    const text = `# Title <script>x()</script>\n\n**bold** ${evil}\n\n\`\`\`\n${evil}\n\`\`\`\n\n- [link](javascript:alert(1))\n`;
    model.custom({ type: "deltas", seq: 1, items: [["p.answer", text.slice(0, 25), false]] });
    await frame();
    model.custom({ type: "deltas", seq: 2, items: [["p.answer", text.slice(25), true]] });
    await frame();
    const t = pane(el, "p.answer")!.querySelector(".jps-pane-text")!;
    expect(t.classList.contains("jps-md")).toBe(true);
    expect(t.querySelector("h1")!.textContent).toBe("Title <script>x()</script>");
    expect(t.querySelector("strong")!.textContent).toBe("bold");
    expect(t.querySelector("pre code")!.textContent).toBe(evil);
    expect(t.querySelector("li")!.textContent).toBe("link");
    expect(t.querySelector("script, img, a, iframe, [onerror]")).toBeNull();
    expect(t.textContent).toContain('<img src=x onerror="window.__pwned = 2">');
    expect((window as any).__pwned).toBeUndefined();
  });

  it("switching markdown on re-renders the full text", async () => {
    const { model, el } = mount();
    model.custom({ type: "deltas", seq: 1, items: [["p.answer", "**hi** there", true]] });
    await frame();
    expect(paneText(el, "p.answer")).toBe("**hi** there");
    model.update({ markdown: true });
    expect(pane(el, "p.answer")!.querySelector("strong")!.textContent).toBe("hi");
    expect(paneText(el, "p.answer")).toBe("hi there");
  });

  it("renderBlocks builds only whitelisted elements", () => {
    const div = document.createElement("div");
    renderBlocks(parseMarkdown(`${evil}\n\n## ${evil}\n\n> ${evil}\n\n1. ${evil}\n   - *${evil}*`), div);
    const tags = new Set([...div.querySelectorAll("*")].map((e) => e.tagName.toLowerCase()));
    for (const tag of tags) expect(["p", "h2", "blockquote", "ol", "ul", "li", "em", "br"]).toContain(tag);
    expect(div.querySelectorAll("[src], [onerror], [href]").length).toBe(0);
  });

  it("PaneView appends O(delta): appendData on the same node", () => {
    const view = new PaneView(
      { key: "p.a", predict: "p", field: "a", text: "", done: false, reasoning: false },
      false,
    );
    const node = view.textEl.firstChild as Text;
    let calls = 0;
    const orig = node.appendData.bind(node);
    node.appendData = (d: string) => {
      calls++;
      orig(d);
    };
    for (let i = 0; i < 100; i++) view.append("x");
    expect(calls).toBe(100);
    expect(view.textEl.textContent).toBe("x".repeat(100));
    expect(view.textEl.firstChild).toBe(node);
  });
});
