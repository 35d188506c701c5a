/**
 * The widget's synced traits as the front end sees them: one interface mirroring
 * `jupyter_stream/notebook/widget.py:StreamWidget` (the wire protocol they follow is described once, in
 * `jupyter_stream/notebook/wire.py`). `tests/notebook/test_traits_mirror.py` checks that both sides name
 * the same traits.
 */

/** A reference to the text of a pane (`{$pane: key}`), with `end`: its first `end` UTF-16 code units. */
export interface PaneRef {
  $pane: string;
  end?: number;
}

/** A text as synced: itself, a reference to a pane, or parts of either (see wire.py). */
export type SyncedText = string | PaneRef | Array<string | PaneRef>;

/**
 * One entry of the `panes` snapshot trait. The final snapshot may come by reference: no `text`, but
 * `tail` (the text not sent in a batch) and `len` (the whole text's length in UTF-16 code units).
 */
export interface PaneSnapshot {
  key: string;
  predict?: string;
  field?: string;
  text?: string;
  done?: boolean;
  tail?: string;
  len?: number;
}

/** The status line's numbers. */
export interface Stats {
  elapsed?: number | null;
  tokens?: number | null;
  tokens_per_s?: number | null;
  ttft?: number | null;
}

/** One prompt message; a held one (the prompt stays in the kernel) carries `cut`, the characters left out. */
export interface PromptMessage {
  role?: string;
  content?: unknown;
  cut?: number;
}

/** One LM call in the prompt inspector. */
export interface LMCall {
  call_id: number;
  /** The variant of a comparison that made the call. */
  variant?: string;
  predict?: string;
  group?: string;
  model?: string;
  messages?: PromptMessage[];
  /** The whole messages' characters when only a preview is synced (ask the kernel for them). */
  held?: number;
  raw?: SyncedText | null;
  reasoning?: SyncedText | null;
  usage?: Record<string, unknown>;
  ttft?: number | null;
  duration?: number | null;
  cached?: boolean;
  done?: boolean;
}

/** The final prediction: its fields (a value may be a reference to a pane) and the LM usage. */
export interface PredictionState {
  fields?: Record<string, unknown>;
  usage?: Record<string, unknown>;
}

export type Status = "idle" | "running" | "done" | "stopped" | "error";

/** One variant of a comparison: a column of its own (wire.py: "A comparison"). */
export interface VariantState {
  label: string;
  model?: string;
  status?: Status;
  error?: string;
  message?: string;
  stats?: Stats;
  prediction?: PredictionState;
}

/** What changed since the previous run of the same cell (`jupyter_stream.RunDiff.blocks`): each block a heading
 * and `[op, text]` pieces (a prompt's: its unified diff's lines; the others: a word diff). Empty: none. */
export interface RunDiffState {
  title?: string;
  changed?: boolean;
  blocks?: Array<{ heading: string; pieces: Array<[string, string]> }>;
}

/** One field of one variant against the first variant: `ops` are `[op, text]`, op `=`, `-` or `+`. */
export interface FieldDiff {
  field: string;
  a: string;
  b: string;
  ops: Array<[string, string]>;
}

/** Every synced trait of `StreamWidget`, by its Python name. */
export interface Traits {
  _uid: string;
  title: string;
  model_name: string;
  status: Status;
  status_message: string;
  status_log: string[];
  error: string;
  markdown: boolean;
  started_at: number;
  stats: Stats;
  panes: PaneSnapshot[];
  snapshot_seq: number;
  prediction: PredictionState;
  lm_calls: LMCall[];
  variants: VariantState[];
  diff: FieldDiff[];
  run_diff: RunDiffState;
}
