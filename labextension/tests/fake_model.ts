import { expect } from "vitest";
import widget from "../src/widget";

/** Initialize `model` as anywidget does and render one view of it into a new element of the document; its
 * disposal goes into `cleanups` (run them after each test). */
export function renderView(model: FakeModel, cleanups: (() => void)[]): HTMLElement {
  const disposeInit = widget.initialize({ model });
  const el = document.createElement("div");
  document.body.appendChild(el);
  const disposeView = widget.render({ model, el });
  cleanups.push(() => {
    disposeView();
    disposeInit();
    el.remove();
  });
  return el;
}

/** A stand-in for anywidget's model proxy: traits, change events, custom messages. */
export class FakeModel {
  attrs: Record<string, any>;
  handlers = new Map<string, Set<(...a: any[]) => void>>();
  sent: any[] = [];
  constructor(attrs: Record<string, any> = {}) {
    this.attrs = {
      _uid: Math.random().toString(36).slice(2),
      title: "predict",
      model_name: "gpt-4o-mini",
      status: "idle",
      status_message: "",
      status_log: [],
      error: "",
      markdown: false,
      started_at: Date.now(),
      stats: {},
      panes: [],
      snapshot_seq: 0,
      prediction: {},
      lm_calls: [],
      ...attrs,
    };
  }
  get(name: string) {
    return this.attrs[name];
  }
  /** Traits set locally by the front end (anywidget's `model.set`, never sent to the kernel). */
  localSets: [string, any][] = [];
  set(name: string, value: any) {
    this.localSets.push([name, value]);
    this.update({ [name]: value });
  }
  /** Set several traits at once, like one comm update message from the kernel (events after all are set). */
  update(values: Record<string, any>) {
    const changed = Object.keys(values).filter((k) => this.attrs[k] !== values[k]);
    Object.assign(this.attrs, values);
    for (const k of changed) this.trigger(`change:${k}`);
  }
  on(name: string, cb: (...a: any[]) => void) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name)!.add(cb);
  }
  off(name?: string | null, cb?: ((...a: any[]) => void) | null) {
    if (!name) return this.handlers.clear();
    if (!cb) return this.handlers.delete(name);
    this.handlers.get(name)?.delete(cb);
  }
  send(content: any) {
    this.sent.push(content);
  }
  /** What the front end asked of the kernel, after its one `hello`. */
  get requests() {
    expect(this.sent.filter((m) => m?.type === "hello")).toEqual([{ type: "hello" }]);
    return this.sent.filter((m) => m?.type !== "hello");
  }
  trigger(name: string, ...args: any[]) {
    for (const cb of [...(this.handlers.get(name) ?? [])]) cb(...args);
  }
  custom(msg: any) {
    this.trigger("msg:custom", msg, []);
  }
  /** One batch of deltas from the kernel, with the next seq. */
  seq = 0;
  deltas(...items: [string, string, boolean][]) {
    this.custom({ type: "deltas", seq: ++this.seq, items });
  }
}
