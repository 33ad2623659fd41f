// sessiontrace UI: plain ES module, no build step, no third-party code.
// Trace content is untrusted (LLM output is full of HTML): every value reaches the
// page through textContent / createTextNode / setAttribute, never innerHTML.

const SVG_NS = "http://www.w3.org/2000/svg";
const main = document.getElementById("main");

// -- DOM helpers ------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "className") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

function pageUrl(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

const link = (path, params, text, cls) => h("a", { href: pageUrl(path, params), className: cls }, text);
const traceLink = (id, text) => link("/trace", { id }, text ?? id, "mono");
const sessionLink = (id) => (id == null ? h("span", { className: "muted" }, "—") : link("/session", { id }, id, "mono"));
const userLink = (id) => (id == null ? h("span", { className: "muted" }, "—") : link("/user", { id }, id, "mono"));

function render(...children) {
  main.replaceChildren();
  append(main, children);
}

// -- formatting -------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");
function fmtTime(ms) {
  if (ms == null) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
const timeCell = (ms) => h("span", { className: "time" }, fmtTime(ms));
function fmtDur(ms) {
  if (ms == null) return "—";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}
const fmtRate = (r) => (r == null ? "—" : `${(r * 100).toFixed(1)}%`);
const fmtInt = (n) => (n == null ? "—" : Number(n).toLocaleString("en-US"));

// USD with the precision a number needs: $1,234.50 from a dollar up, three significant
// digits below it ($0.0202, $0.00575, $0.00018), and $0.00 for a real zero (a free
// model). An unknown cost is never a number: see costCell.
function fmtUsd(c) {
  if (typeof c !== "number" || !Number.isFinite(c)) return "—";
  if (c < 0) return `-${fmtUsd(-c)}`;
  if (c === 0) return "$0.00";
  if (c >= 1) return `$${c.toFixed(2).replace(/\B(?=(\d{3})+(?!\d))/g, ",")}`;
  if (c < 1e-10) return "<$0.0000000001";
  const [whole, frac] = c.toFixed(Math.max(2, 2 - Math.floor(Math.log10(c)))).split(".");
  return `$${whole}.${frac.replace(/0+$/, "").padEnd(2, "0")}`;
}

// The LLM numbers of a record (trace, turn, session, user, version, model, day):
// llm_calls, input_tokens, output_tokens, total_tokens, cost (null when no call was
// priced) and unpriced_calls. No calls: "—"; calls but no price: "unpriced"; a cost
// that leaves calls out says so.
const plural = (n, word) => `${fmtInt(n)} ${word}${n === 1 ? "" : "s"}`;
function costCell(r) {
  const calls = (r && r.llm_calls) || 0;
  const unpriced = (r && r.unpriced_calls) || 0;
  if (!r || typeof r.cost !== "number") {
    if (!calls) return h("span", { className: "muted" }, "—");
    return h("span", { className: "unpriced", title: `${plural(calls, "LLM call")} without a known price` }, "unpriced");
  }
  const cost = h("span", { className: "cost", title: `${r.cost} USD` }, fmtUsd(r.cost));
  if (!unpriced) return cost;
  return h("span", {}, cost, " ", h("span", { className: "unpriced small", title: `the cost leaves out ${plural(unpriced, "unpriced call")}` }, `+${fmtInt(unpriced)} unpriced`));
}
function tokensCell(r) {
  if (!r || (!r.llm_calls && !r.total_tokens)) return h("span", { className: "muted" }, "—");
  return h("span", { className: "tokens", title: `${fmtInt(r.input_tokens)} input · ${fmtInt(r.output_tokens)} output · ${plural(r.llm_calls, "LLM call")}` }, fmtInt(r.total_tokens));
}
// For the stats boxes: the total, with input / output under it.
function tokensStat(r) {
  if (!r || (!r.llm_calls && !r.total_tokens)) return h("span", { className: "muted" }, "—");
  return h("span", {}, h("span", { className: "tokens" }, fmtInt(r.total_tokens)), h("span", { className: "muted small sub" }, ` ${fmtInt(r.input_tokens)} in / ${fmtInt(r.output_tokens)} out`));
}
const llmColumns = () => [
  { label: "Tokens", key: "tokens", sort: "total_tokens", num: true, cell: tokensCell },
  { label: "Cost", key: "cost", sort: "cost", num: true, cell: costCell },
];
const llmStats = (r) => [
  ["LLM calls", fmtInt(r.llm_calls || 0)],
  ["Tokens", tokensStat(r)],
  ["Cost", costCell(r)],
];

// -- feedback (users' verdicts on turns: MLflow's assessments) -----------------------
// Names, values, comments and who gave them are untrusted text like any trace content.

// One assessment as the page needs it, whichever way the server spells it (our flat
// dataclass fields, or MLflow's to_dictionary: assessment_name, feedback.value, ...).
function assessmentOf(a) {
  const src = isObject(a.source) ? a.source : {};
  const fb = isObject(a.feedback) ? a.feedback : null;
  const ex = isObject(a.expectation) ? a.expectation : null;
  const kind = a.kind ?? (ex || a.expectation !== undefined ? "expectation" : "feedback");
  // MLflow writes an expectation's dict or list value as JSON text in serialized_value.
  let exValue = ex ? ex.value : null;
  if (ex && ex.value === undefined && isObject(ex.serialized_value)) {
    try {
      exValue = JSON.parse(ex.serialized_value.value);
    } catch {
      exValue = ex.serialized_value.value;
    }
  }
  const time = a.create_time_ms ?? a.last_update_time_ms ?? (typeof a.create_time === "string" ? Date.parse(a.create_time) : a.create_time);
  return {
    id: a.assessment_id ?? null,
    name: a.name ?? a.assessment_name ?? "feedback",
    kind,
    value: a.value !== undefined ? a.value : fb ? fb.value : exValue,
    error: a.error ?? (fb ? fb.error : null) ?? null,
    rationale: a.rationale ?? a.comment ?? null,
    sourceType: a.source_type ?? src.source_type ?? null,
    sourceId: a.source_id ?? src.source_id ?? null,
    valid: a.valid !== false,
    overrides: a.overrides ?? null,
    spanId: a.span_id ?? null,
    time: typeof time === "number" && Number.isFinite(time) ? time : null,
  };
}

// A thumb drawn inline (an emoji would need a font the machine may not have).
function thumb(up) {
  return svg(
    "svg",
    { viewBox: "0 0 16 16", width: 14, height: 14, class: `thumb ${up ? "up" : "down"}`, role: "img", "aria-label": up ? "thumbs up" : "thumbs down" },
    svg("g", up ? {} : { transform: "rotate(180 8 8)" }, svg("rect", { x: 1, y: 7, width: 3, height: 8, rx: 0.6 }), svg("path", { d: "M5 7 L8 2.4 C8.6 1.5 10.1 1.9 10 3.1 L9.6 6.5 H14 C15 6.5 15.6 7.4 15.3 8.3 L13.6 14 C13.4 14.6 12.9 15 12.3 15 H5 Z" })),
  );
}

// A value as the person gave it: a thumb for a boolean, the number, the text, or JSON.
function verdict(v) {
  if (v === true) return h("span", { className: "fb-value pos", title: "thumbs up (true)" }, thumb(true));
  if (v === false) return h("span", { className: "fb-value neg", title: "thumbs down (false)" }, thumb(false));
  if (typeof v === "number") return h("span", { className: "fb-value num" }, String(v));
  if (v == null) return h("span", { className: "fb-value muted" }, "—");
  return h("span", { className: "fb-value text" }, typeof v === "string" ? v : preview(JSON.stringify(v), 500));
}

const sourceText = (f) => {
  const who = f.sourceId && f.sourceId !== "default" ? f.sourceId : null;
  const type = f.sourceType && f.sourceType !== "HUMAN" ? f.sourceType.toLowerCase().replace("_", " ") : null;
  return [who, type].filter(Boolean).join(", ");
};

// The assessments of a turn or a trace: value, name, who, comment; an overridden
// one stays (as in MLflow) but struck through and marked.
function feedbackList(list, { withTime = false } = {}) {
  const items = (Array.isArray(list) ? list : []).map(assessmentOf);
  if (!items.length) return null;
  const overriddenBy = new Map(items.filter((f) => f.overrides).map((f) => [f.overrides, f]));
  return h(
    "ul",
    { className: "feedback" },
    items.map((f) => {
      const replaced = !f.valid || overriddenBy.has(f.id);
      const by = sourceText(f);
      return h(
        "li",
        {
          className: `fb${replaced ? " overridden" : ""}${f.value === false ? " fb-neg" : f.value === true ? " fb-pos" : ""}`,
          "data-name": f.name,
          "data-value": typeof f.value === "boolean" || typeof f.value === "number" ? String(f.value) : null,
          "data-valid": replaced ? "false" : "true",
        },
        verdict(f.value),
        " ",
        h("span", { className: "fb-name mono" }, f.name),
        f.kind === "expectation" ? h("span", { className: "fb-kind muted small" }, " (expected)") : null,
        by ? [h("span", { className: "muted" }, " by "), h("span", { className: "fb-source mono" }, by)] : null,
        withTime && f.time != null ? h("span", { className: "muted small" }, ` · ${fmtTime(f.time)}`) : null,
        replaced ? h("span", { className: "fb-overridden badge", title: "replaced by a later assessment (override_feedback); not counted" }, "overridden") : null,
        f.overrides ? h("span", { className: "muted small" }, " (correction)") : null,
        f.rationale ? h("q", { className: "fb-comment" }, f.rationale) : null,
        f.error ? h("span", { className: "errtext small" }, ` error: ${preview(typeof f.error === "string" ? f.error : JSON.stringify(f.error), 200)}`) : null,
      );
    }),
  );
}

const hasNegative = (list) => (Array.isArray(list) ? list : []).map(assessmentOf).some((f) => f.valid && f.value === false);

// A trace's valid feedback in a table cell: its thumbs, and how many other verdicts.
function feedbackBrief(list) {
  const valid = (Array.isArray(list) ? list : []).map(assessmentOf).filter((f) => f.valid && f.kind === "feedback");
  if (!valid.length) return h("span", { className: "muted" }, "—");
  const thumbs = valid.filter((f) => typeof f.value === "boolean");
  const others = valid.length - thumbs.length;
  return h(
    "span",
    { className: "fb-brief", title: valid.map((f) => `${f.name}: ${typeof f.value === "string" ? f.value : JSON.stringify(f.value)}${f.sourceId ? ` (${f.sourceId})` : ""}`).join("\n") },
    thumbs.map((f) => thumb(f.value)),
    others ? h("span", { className: "muted small" }, ` +${fmtInt(others)}`) : null,
  );
}

// Satisfaction of a record (session, user, version, day): the positive rate over its
// valid boolean feedback, with how many verdicts it rests on.
function satisfactionCell(r) {
  const n = (r && r.feedback_count) || 0;
  if (!n) return h("span", { className: "muted" }, "—");
  const rate = r.satisfaction;
  const cls = rate == null ? "satisfaction" : rate < 0.5 ? "satisfaction low" : "satisfaction";
  return h("span", { className: cls, title: `${fmtInt(n)} feedback · ${fmtInt(r.negative_feedback || 0)} thumbs down` }, rate == null ? "n/a" : fmtRate(rate), h("span", { className: "muted small" }, ` (${fmtInt(n)})`));
}
function negativeCell(r) {
  const n = (r && r.negative_feedback) || 0;
  return n ? h("span", { className: "negative", title: `${fmtInt(n)} thumbs down` }, thumb(false), " ", fmtInt(n)) : h("span", { className: "muted" }, "0");
}
const feedbackColumns = () => [
  { label: "Satisfaction", key: "satisfaction", sort: "satisfaction", num: true, cell: satisfactionCell },
  { label: "Negative", key: "negative", sort: "negative_feedback", num: true, cell: negativeCell },
];
// For the stats boxes: the rate, with the count and the negatives beside it.
function satisfactionStat(r) {
  const n = (r && r.feedback_count) || 0;
  if (!n) return h("span", { className: "muted", title: "no feedback" }, "—");
  const neg = r.negative_feedback || 0;
  return h(
    "span",
    { className: "satisfaction-stat" },
    h("span", { className: r.satisfaction != null && r.satisfaction < 0.5 ? "satisfaction low" : "satisfaction" }, r.satisfaction == null ? "n/a" : fmtRate(r.satisfaction)),
    h("span", { className: "muted small sub" }, ` · ${fmtInt(n)} feedback · `),
    h("span", { className: neg ? "negative small sub" : "muted small sub" }, thumb(false), ` ${fmtInt(neg)}`),
  );
}
// Plus a box per numeric feedback name (a 1-5 rating): its mean and count.
const feedbackStats = (r) => [
  ["Satisfaction", satisfactionStat(r)],
  ...Object.values(isObject(r && r.feedback) ? r.feedback : {})
    .filter((f) => isObject(f) && typeof f.mean === "number")
    .map((f) => [
      h("span", { className: "mono" }, String(f.name)),
      h("span", { className: "fb-mean", "data-name": f.name }, f.mean.toFixed(2), h("span", { className: "muted small sub" }, ` mean · ${fmtInt(f.count)}`)),
    ]),
];

function preview(text, n = 120) {
  if (text == null) return "";
  const s = String(text);
  return s.length > n ? `${s.slice(0, n)}…` : s;
}
const pretty = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));
const quote = (s) => `'${String(s).replaceAll("'", "''")}'`;

function statusBadge(state) {
  const cls = state === "ERROR" ? "badge err" : state === "OK" ? "badge ok" : "badge";
  return h("span", { className: cls }, state ?? "—");
}

function tagList(tags) {
  const entries = Object.entries(tags || {});
  if (!entries.length) return h("span", { className: "muted" }, "");
  return h("span", { className: "tags" }, entries.map(([k, v]) => h("span", { className: "tag" }, `${k}=${v}`)));
}

// Chat text: the message in a request / the answer in a response, else JSON.
function requestText(v) {
  if (v == null) return "";
  if (typeof v === "string") return v;
  if (typeof v === "object" && !Array.isArray(v)) {
    for (const k of ["message", "question", "query", "prompt", "input", "user_message", "content", "text"]) {
      if (typeof v[k] === "string") return v[k];
    }
    const msgs = Array.isArray(v.messages) ? v.messages : null;
    if (msgs) {
      const users = msgs.filter((m) => m && m.role === "user");
      const last = users[users.length - 1];
      if (last && typeof last.content === "string") return last.content;
    }
    const values = Object.values(v);
    if (values.length === 1) return requestText(values[0]);
  }
  return pretty(v);
}
function responseText(v) {
  if (v == null) return "";
  if (typeof v === "string") return v;
  if (typeof v === "object" && !Array.isArray(v)) {
    for (const k of ["answer", "response", "output", "content", "text", "message", "reply"]) {
      if (typeof v[k] === "string") return v[k];
      if (v[k] && typeof v[k] === "object" && typeof v[k].content === "string") return v[k].content;
    }
    const c = v.choices && v.choices[0];
    if (c && c.message && typeof c.message.content === "string") return c.message.content;
  }
  return pretty(v);
}

// -- the JSON API -----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, params, init) {
  const res = await fetch(pageUrl(path, params), { credentials: "same-origin", ...(init || {}) });
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [k, ...rest] = part.trim().split("=");
    if (k === "sessiontrace_csrf") return rest.join("=");
  }
  return "";
}

const writeApi = (method, path, body) =>
  api(path, null, {
    method,
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body),
  });

function errorBox(err) {
  return h("div", { className: "error", role: "alert" }, err instanceof ApiError ? err.message : `Could not load: ${err}`);
}

// -- shared widgets ---------------------------------------------------------------

const params = () => new URLSearchParams(location.search);

function go(path, p) {
  history.pushState(null, "", pageUrl(path, p));
  route();
}

// A filter box with the search grammar; errors point at the character.
function filterBox(value, onSubmit, placeholder) {
  const input = h("input", {
    type: "search",
    name: "filter",
    id: "filter",
    value: value || "",
    placeholder: placeholder || "user = 'user-123' AND trace.status = 'ERROR'",
    autocomplete: "off",
    spellcheck: "false",
    "aria-label": "filter",
  });
  const errorSlot = h("div", { className: "filter-error-slot" });
  const form = h(
    "form",
    {
      className: "filter",
      onsubmit: (e) => {
        e.preventDefault();
        onSubmit(input.value.trim());
      },
    },
    input,
    h("button", { type: "submit" }, "Filter"),
  );
  const help = h(
    "details",
    { className: "help" },
    h("summary", {}, "filter syntax"),
    h(
      "ul",
      {},
      [
        "user = 'user-123'   session = 'session-abc'",
        "metadata.`mlflow.trace.session` = 'session-abc-0'",
        "tags.query_category = 'chat' AND trace.status = 'ERROR'",
        "execution_time_ms > 1000 OR span.type IN ('LLM', 'TOOL')",
        "trace.timestamp_ms > 1765560000000   name LIKE 'chat%'",
        "trace.cost > 0.01   trace.total_tokens > 1000   span.model = 'gpt-4o-mini'",
        "feedback.thumbs_up = false   feedback.rating >= 4   expectation.label = 'spam'",
      ].map((x) => h("li", {}, h("code", {}, x))),
    ),
  );
  const box = h("div", { className: "filter-box" }, form, errorSlot, help);
  box.showError = (err) => {
    errorSlot.replaceChildren();
    if (!err) {
      input.removeAttribute("aria-invalid");
      return;
    }
    input.setAttribute("aria-invalid", "true");
    const pos = err.body && typeof err.body.position === "number" ? err.body.position : null;
    const text = (err.body && err.body.text) || input.value;
    const parts = [h("div", { className: "msg" }, err.message)];
    if (pos !== null) {
      parts.push(
        h(
          "pre",
          { className: "caret" },
          text.slice(0, pos),
          h("mark", {}, text.slice(pos, pos + 1) || " "),
          text.slice(pos + 1),
          "\n",
          `${" ".repeat(pos)}^ position ${pos}`,
        ),
      );
      input.focus();
      input.setSelectionRange(pos, Math.min(pos + 1, input.value.length));
    }
    errorSlot.appendChild(h("div", { className: "filter-error", role: "alert", "data-position": pos ?? "" }, parts));
  };
  return box;
}

function pager(token, onNext, onFirst, isFirst) {
  return h(
    "div",
    { className: "pager" },
    isFirst ? null : h("button", { type: "button", onclick: onFirst }, "« First page"),
    token ? h("button", { type: "button", className: "next", onclick: () => onNext(token) }, "Next page »") : h("span", { className: "muted" }, "End of results"),
  );
}

// A table whose headers sort through order_by ("key DESC").
function table(columns, rows, sort) {
  const head = h(
    "tr",
    {},
    columns.map((c) => {
      if (!c.sort || !sort) return h("th", { className: c.num ? "num" : null }, c.label);
      const [key, dir] = (sort.current || "").split(" ");
      const active = key === c.sort;
      const next = active && dir === "DESC" ? "ASC" : "DESC";
      return h(
        "th",
        { className: c.num ? "num sortable" : "sortable", "aria-sort": active ? (dir === "ASC" ? "ascending" : "descending") : null },
        h("button", { type: "button", className: "sort", onclick: () => sort.onSort(`${c.sort} ${next}`) }, c.label, active ? (dir === "ASC" ? " ▲" : " ▼") : ""),
      );
    }),
  );
  const body = rows.map((r) => h("tr", r.attrs || {}, columns.map((c) => h("td", { className: c.num ? "num" : null, "data-col": c.key }, c.cell(r.data ?? r)))));
  return h("table", { className: "grid" }, h("thead", {}, head), h("tbody", {}, body));
}

function stats(pairs) {
  return h(
    "dl",
    { className: "stats" },
    pairs.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))),
  );
}

// -- pages ------------------------------------------------------------------------

async function tracesPage() {
  const p = params();
  const filter = p.get("filter") || "";
  const group = p.get("group") === "1";
  const token = p.get("page_token");
  const order = p.get("order_by") || "";
  const setParams = (changes) => go("/traces", { filter, group: group ? "1" : "", order_by: order, ...changes });
  const box = filterBox(filter, (f) => setParams({ filter: f, page_token: "" }));
  const toggle = h("label", { className: "toggle" }, h("input", { type: "checkbox", id: "group-by-session", checked: group, onchange: (e) => setParams({ group: e.target.checked ? "1" : "", page_token: token }) }), " group by session");
  const results = h("div", { id: "results" }, h("p", { className: "muted" }, "Loading…"));
  render(h("h1", {}, "Traces"), h("div", { className: "toolbar" }, box, toggle), results);
  let data;
  try {
    data = await api("/api/traces", { filter, order_by: order, page_token: token, max_results: 50 });
  } catch (err) {
    if (err.status === 400) box.showError(err);
    results.replaceChildren(err.status === 400 ? h("p", { className: "muted" }, "Fix the filter to see traces.") : errorBox(err));
    return;
  }
  const filterBy = (expr) => (e) => {
    e.preventDefault();
    setParams({ filter: expr, page_token: "" });
  };
  const columns = [
    { label: "Time", sort: "timestamp_ms", cell: (t) => traceLink(t.trace_id, fmtTime(t.request_time)) },
    { label: "Name", cell: (t) => t.name ?? "" },
    { label: "User", cell: (t) => (t.user_id == null ? "—" : h("a", { href: pageUrl("/traces", { filter: `user = ${quote(t.user_id)}` }), className: "mono filter-user", onclick: filterBy(`user = ${quote(t.user_id)}`) }, t.user_id)) },
    { label: "Session", cell: (t) => (t.session_id == null ? "—" : h("a", { href: pageUrl("/traces", { filter: `session = ${quote(t.session_id)}` }), className: "mono filter-session", onclick: filterBy(`session = ${quote(t.session_id)}`) }, t.session_id)) },
    { label: "Status", cell: (t) => statusBadge(t.state) },
    { label: "Duration", sort: "execution_time_ms", num: true, cell: (t) => fmtDur(t.execution_duration) },
    ...llmColumns(),
    { label: "Request", cell: (t) => h("span", { className: "preview" }, preview(t.request_preview)) },
    { label: "Response", cell: (t) => h("span", { className: "preview" }, preview(t.response_preview)) },
    { label: "Tags", cell: (t) => tagList(t.tags) },
  ];
  // The feedback column, when the server sends the rows' assessments.
  if (data.traces.some((t) => Array.isArray(t.assessments))) columns.splice(6, 0, { label: "Feedback", key: "feedback", cell: (t) => feedbackBrief(t.assessments) });
  const rows = [];
  if (group) {
    const groups = new Map();
    for (const t of data.traces) {
      const key = t.session_id ?? "";
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(t);
    }
    for (const [sid, traces] of groups) {
      rows.push({ group: true, sid, n: traces.length });
      for (const t of traces) rows.push(t);
    }
  }
  const sort = { current: order || "timestamp_ms DESC", onSort: (o) => setParams({ order_by: o, page_token: "" }) };
  const tableEl = table(columns, group ? rows.filter((r) => !r.group) : data.traces, sort);
  if (group) {
    // Insert a header row before each session's traces.
    const body = tableEl.tBodies[0];
    body.replaceChildren();
    for (const r of rows) {
      if (r.group) {
        body.appendChild(h("tr", { className: "group-row" }, h("td", { colspan: columns.length }, "Session ", r.sid ? link("/session", { id: r.sid }, r.sid, "mono") : h("span", { className: "muted" }, "(none)"), h("span", { className: "muted" }, ` · ${r.n} trace(s) on this page`))));
      } else {
        body.appendChild(h("tr", {}, columns.map((c) => h("td", { className: c.num ? "num" : null, "data-col": c.key }, c.cell(r)))));
      }
    }
  }
  results.replaceChildren(
    data.traces.length ? tableEl : h("p", { className: "muted empty" }, "No traces match."),
    pager(data.next_page_token, (t) => setParams({ page_token: t }), () => setParams({ page_token: "" }), !token),
  );
}

async function sessionsPage() {
  const p = params();
  const filter = p.get("filter") || "";
  const order = p.get("order_by") || "";
  const token = p.get("page_token");
  const setParams = (changes) => go("/sessions", { filter, order_by: order, ...changes });
  const box = filterBox(filter, (f) => setParams({ filter: f, page_token: "" }), "user = 'user-123'  (only matching traces are counted)");
  const results = h("div", { id: "results" }, h("p", { className: "muted" }, "Loading…"));
  const worst = h("p", { className: "quick-sorts small" }, "Sort: ", link("/sessions", { filter, order_by: "negative_feedback DESC" }, "most negative feedback first", "sort-negative"), " · ", link("/sessions", { filter, order_by: "satisfaction ASC" }, "least satisfied first", "sort-satisfaction"));
  render(h("h1", {}, "Sessions"), h("div", { className: "toolbar" }, box), worst, results);
  let data;
  try {
    data = await api("/api/sessions", { filter, order_by: order, page_token: token });
  } catch (err) {
    if (err.status === 400) box.showError(err);
    results.replaceChildren(errorBox(err));
    return;
  }
  const columns = [
    { label: "Session", sort: "session_id", cell: (s) => sessionLink(s.session_id) },
    { label: "Users", cell: (s) => s.user_ids.map((u, i) => [i ? ", " : "", userLink(u)]) },
    { label: "First seen", sort: "first_seen", cell: (s) => timeCell(s.first_seen_ms) },
    { label: "Last seen", sort: "last_seen", cell: (s) => timeCell(s.last_seen_ms) },
    { label: "Turns", sort: "turns", num: true, cell: (s) => fmtInt(s.turns) },
    { label: "Total duration", sort: "total_duration_ms", num: true, cell: (s) => fmtDur(s.total_duration_ms) },
    { label: "Errors", sort: "errors", num: true, cell: (s) => (s.errors ? h("span", { className: "errtext" }, fmtInt(s.errors)) : "0") },
    ...feedbackColumns(),
    ...llmColumns(),
    { label: "First message", cell: (s) => h("span", { className: "preview" }, preview(requestText(parseMaybe(s.first_request_preview)), 80)) },
  ];
  results.replaceChildren(
    data.sessions.length ? table(columns, data.sessions, { current: order || "last_seen DESC", onSort: (o) => setParams({ order_by: o, page_token: "" }) }) : h("p", { className: "muted empty" }, "No sessions yet."),
    pager(data.next_page_token, (t) => setParams({ page_token: t }), () => setParams({ page_token: "" }), !token),
  );
}

function parseMaybe(text) {
  if (text == null) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

async function sessionPage() {
  const id = params().get("id");
  if (!id) return render(errorBox(new Error("no session id")));
  render(h("h1", {}, "Session ", h("span", { className: "mono" }, id)), h("p", { className: "muted" }, "Loading…"));
  let data;
  try {
    data = await api("/api/session", { id });
  } catch (err) {
    return render(h("h1", {}, "Session ", h("span", { className: "mono" }, id)), errorBox(err));
  }
  const s = data.summary;
  const turns = data.turns.map((t) =>
    h(
      "li",
      { className: `turn${t.status === "ERROR" ? " turn-error" : ""}${hasNegative(t.feedback) ? " turn-negative" : ""}`, "data-turn": t.turn, "data-trace-id": t.trace_id },
      h("div", { className: "bubble user" }, h("div", { className: "who" }, t.user_id ?? "user"), h("div", { className: "text" }, requestText(t.request))),
      h("div", { className: "bubble app" }, h("div", { className: "who" }, t.name ?? "app"), h("div", { className: "text" }, responseText(t.response))),
      h(
        "div",
        { className: "turn-meta" },
        `#${t.turn} · ${fmtTime(t.timestamp)} · ${fmtDur(t.duration_ms)} · `,
        t.llm_calls ? h("span", { className: "turn-llm" }, `${plural(t.llm_calls, "LLM call")} · `, tokensCell(t), " tokens · ", costCell(t), " · ") : null,
        statusBadge(t.status),
        " ",
        tagList(t.tags),
        " ",
        traceLink(t.trace_id, "trace →"),
      ),
      feedbackList(t.feedback),
    ),
  );
  render(
    h("p", { className: "crumbs" }, link("/sessions", {}, "Sessions"), " / "),
    h("h1", {}, "Session ", h("span", { className: "mono" }, s.session_id)),
    stats([
      ["Users", s.user_ids.length ? s.user_ids.map((u, i) => [i ? ", " : "", userLink(u)]) : "—"],
      ["Turns", fmtInt(s.turns)],
      ["First seen", fmtTime(s.first_seen_ms)],
      ["Last seen", fmtTime(s.last_seen_ms)],
      ["Total duration", fmtDur(s.total_duration_ms)],
      ["Mean latency", fmtDur(s.mean_duration_ms)],
      ["Errors", `${fmtInt(s.errors)} (${fmtRate(s.error_rate)})`],
      ...feedbackStats(s),
      ...llmStats(s),
    ]),
    h("p", {}, link("/traces", { filter: `session = ${quote(s.session_id)}` }, "these traces in the trace list →")),
    h("ol", { className: "chat", id: "chat" }, turns),
  );
}

async function usersPage() {
  const p = params();
  const filter = p.get("filter") || "";
  const order = p.get("order_by") || "";
  const token = p.get("page_token");
  const days = Number(p.get("days") || 30);
  const setParams = (changes) => go("/users", { filter, order_by: order, days: p.get("days"), ...changes });
  const box = filterBox(filter, (f) => setParams({ filter: f, page_token: "" }), "metadata.app_version = '2.0'  (only matching traces are counted)");
  const results = h("div", { id: "results" }, h("p", { className: "muted" }, "Loading…"));
  const daySelect = h(
    "select",
    { "aria-label": "period", id: "cost-period", onchange: (e) => setParams({ days: e.target.value }) },
    [7, 30, 90, 365].map((d) => h("option", { value: d, selected: d === days }, `last ${d} days`)),
  );
  const costSection = h("section", { id: "daily-cost" }, h("h2", {}, "Daily cost ", daySelect), h("p", { className: "muted" }, "Loading…"));
  const worst = h("p", { className: "quick-sorts small" }, "Sort: ", link("/users", { filter, order_by: "satisfaction ASC" }, "lowest satisfaction first", "sort-satisfaction"), " · ", link("/users", { filter, order_by: "negative_feedback DESC" }, "most negative feedback first", "sort-negative"));
  render(h("h1", {}, "Users"), h("div", { className: "toolbar" }, box), worst, costSection, results);
  let data, daily;
  try {
    [data, daily] = await Promise.all([api("/api/users", { filter, order_by: order, page_token: token }), api("/api/daily", { filter, days })]);
  } catch (err) {
    if (err.status === 400) box.showError(err);
    results.replaceChildren(errorBox(err));
    costSection.remove();
    return;
  }
  costSection.replaceChildren(costSection.firstChild, costChart(daily.daily, daily.since_ms, daily.until_ms), costSummary(daily.daily));
  const columns = [
    { label: "User", sort: "user_id", cell: (u) => userLink(u.user_id) },
    { label: "First seen", sort: "first_seen", cell: (u) => timeCell(u.first_seen_ms) },
    { label: "Last seen", sort: "last_seen", cell: (u) => timeCell(u.last_seen_ms) },
    { label: "Sessions", sort: "sessions", num: true, cell: (u) => fmtInt(u.sessions) },
    { label: "Traces", sort: "traces", num: true, cell: (u) => fmtInt(u.traces) },
    { label: "Errors", sort: "errors", num: true, cell: (u) => `${fmtInt(u.errors)} (${fmtRate(u.error_rate)})` },
    { label: "Mean latency", sort: "mean_latency_ms", num: true, cell: (u) => fmtDur(u.mean_latency_ms) },
    ...feedbackColumns(),
    ...llmColumns(),
  ];
  results.replaceChildren(
    data.users.length ? table(columns, data.users, { current: order || "last_seen DESC", onSort: (o) => setParams({ order_by: o, page_token: "" }) }) : h("p", { className: "muted empty" }, "No users yet."),
    pager(data.next_page_token, (t) => setParams({ page_token: t }), () => setParams({ page_token: "" }), !token),
  );
}

// Every UTC day of the period, those without traces as zeros.
function fillDays(daily, sinceMs, untilMs) {
  const days = [];
  const byDate = new Map(daily.map((d) => [d.date, d]));
  const start = new Date(sinceMs ?? (daily.length ? Date.parse(daily[0].date) : untilMs));
  for (let t = Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate()); t <= untilMs; t += 86400000) {
    const date = new Date(t).toISOString().slice(0, 10);
    days.push(byDate.get(date) || { date, traces: 0, errors: 0, llm_calls: 0, input_tokens: 0, output_tokens: 0, total_tokens: 0, cost: null, unpriced_calls: 0 });
  }
  return days;
}

// Daily activity: one bar a day (errors in red on top of OK traces), inline SVG.
function activityChart(daily, sinceMs, untilMs) {
  const days = fillDays(daily, sinceMs, untilMs);
  const W = 720, H = 180, padL = 36, padB = 28, padT = 10;
  const max = Math.max(1, ...days.map((d) => d.traces));
  const bw = (W - padL) / Math.max(days.length, 1);
  const y = (v) => padT + (H - padT - padB) * (1 - v / max);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "daily activity" });
  chart.appendChild(svg("line", { x1: padL, x2: W, y1: y(0), y2: y(0), class: "axis" }));
  chart.appendChild(svg("text", { x: padL - 6, y: y(max) + 4, "text-anchor": "end", class: "tick" }, String(max)));
  chart.appendChild(svg("text", { x: padL - 6, y: y(0), "text-anchor": "end", class: "tick" }, "0"));
  const every = Math.ceil(days.length / 10);
  days.forEach((d, i) => {
    const x = padL + i * bw + bw * 0.15;
    const w = Math.max(1, bw * 0.7);
    const ok = d.traces - d.errors;
    const g = svg("g", { class: "day", "data-date": d.date, "data-traces": d.traces });
    g.appendChild(svg("title", {}, `${d.date}: ${d.traces} traces, ${d.errors} errors`));
    if (ok > 0) g.appendChild(svg("rect", { x, y: y(ok), width: w, height: y(0) - y(ok), class: "bar" }));
    if (d.errors > 0) g.appendChild(svg("rect", { x, y: y(d.traces), width: w, height: y(ok) - y(d.traces), class: "bar err" }));
    if (i % every === 0) g.appendChild(svg("text", { x: x + w / 2, y: H - 8, "text-anchor": "middle", class: "tick" }, d.date.slice(5)));
    chart.appendChild(g);
  });
  return chart;
}

// costCell as plain text (chart tooltips).
function costText(r) {
  if (typeof r.cost !== "number") return r.llm_calls ? "unpriced" : "—";
  return r.unpriced_calls ? `${fmtUsd(r.cost)} +${fmtInt(r.unpriced_calls)} unpriced` : fmtUsd(r.cost);
}

// Daily cost: one bar a day; a day with calls no price covers gets a mark, so a day
// of unpriced calls never passes for a free one.
function costChart(daily, sinceMs, untilMs) {
  const days = fillDays(daily, sinceMs, untilMs);
  const W = 720, H = 180, padL = 72, padB = 28, padT = 14;
  const cost = (d) => (typeof d.cost === "number" ? d.cost : 0);
  const max = Math.max(0, ...days.map(cost));
  const y = (v) => padT + (H - padT - padB) * (1 - v / (max || 1));
  const bw = (W - padL) / Math.max(days.length, 1);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart cost-chart", role: "img", "aria-label": "daily cost" });
  chart.appendChild(svg("line", { x1: padL, x2: W, y1: y(0), y2: y(0), class: "axis" }));
  if (max > 0) chart.appendChild(svg("text", { x: padL - 6, y: y(max) + 4, "text-anchor": "end", class: "tick" }, fmtUsd(max)));
  chart.appendChild(svg("text", { x: padL - 6, y: y(0), "text-anchor": "end", class: "tick" }, "$0"));
  const every = Math.ceil(days.length / 10);
  days.forEach((d, i) => {
    const x = padL + i * bw + bw * 0.15;
    const w = Math.max(1, bw * 0.7);
    const g = svg("g", { class: "day", "data-date": d.date, "data-cost": typeof d.cost === "number" ? d.cost : "", "data-unpriced": d.unpriced_calls || 0 });
    const calls = d.llm_calls ? ` · ${fmtInt(d.total_tokens)} tokens · ${plural(d.llm_calls, "LLM call")}` : "";
    g.appendChild(svg("title", {}, `${d.date}: ${costText(d)}${calls}`));
    // A free day (priced at $0) gets a flat bar: it is not a day without calls.
    if (d.cost === 0 && d.llm_calls) g.appendChild(svg("rect", { x, y: y(0) - 2, width: w, height: 2, class: "bar cost zero" }));
    // A bar at least 1 px high for any cost above zero, however small beside the top.
    if (cost(d) > 0) g.appendChild(svg("rect", { x, y: Math.min(y(cost(d)), y(0) - 1), width: w, height: Math.max(1, y(0) - y(cost(d))), class: "bar cost" }));
    if (d.unpriced_calls) g.appendChild(svg("circle", { cx: x + w / 2, cy: Math.min(y(cost(d)), y(0)) - 6, r: 3.5, class: "unpriced-mark" }));
    if (i % every === 0) g.appendChild(svg("text", { x: x + w / 2, y: H - 8, "text-anchor": "middle", class: "tick" }, d.date.slice(5)));
    chart.appendChild(g);
  });
  if (!days.some((d) => d.unpriced_calls)) return chart;
  const mark = svg("svg", { viewBox: "0 0 10 10", width: 10, height: 10, class: "legend-mark" }, svg("circle", { cx: 5, cy: 5, r: 3.5, class: "unpriced-mark" }));
  return h("div", { className: "cost-chart-box" }, chart, h("p", { className: "legend muted small" }, mark, " a day with LLM calls that no price covers: their cost is unknown, not $0"));
}

// The period's totals under a cost chart, summed from its days.
function costSummary(daily) {
  const sum = { llm_calls: 0, input_tokens: 0, output_tokens: 0, total_tokens: 0, cost: null, unpriced_calls: 0 };
  for (const d of daily) {
    for (const k of ["llm_calls", "input_tokens", "output_tokens", "total_tokens", "unpriced_calls"]) sum[k] += d[k] || 0;
    if (typeof d.cost === "number") sum.cost = (sum.cost || 0) + d.cost;
  }
  return h("p", { className: "cost-summary" }, "In this period: ", costCell(sum), " · ", tokensCell(sum), " tokens · ", plural(sum.llm_calls, "LLM call"));
}

// The per-day feedback rows of /api/feedback/daily as series: one per metadata value
// (versions page) or a single one (user page); positives and negatives of every
// boolean feedback name summed per day.
function feedbackSeries(rows) {
  const series = new Map();
  for (const r of Array.isArray(rows) ? rows : []) {
    if (!r || typeof r.date !== "string") continue;
    const label = r.value ?? r.metadata_value ?? "";
    if (!series.has(label)) series.set(label, new Map());
    const days = series.get(label);
    const d = days.get(r.date) || { date: r.date, count: 0, positive: 0, negative: 0 };
    d.count += r.feedback_count ?? r.count ?? 0;
    if (isObject(r.feedback)) {
      for (const stat of Object.values(r.feedback)) {
        d.positive += (stat && stat.positive) || 0;
        d.negative += (stat && stat.negative) || 0;
      }
    } else {
      d.positive += r.positive || 0;
      d.negative += r.negative ?? r.negative_feedback ?? 0;
    }
    days.set(r.date, d);
  }
  return [...series.entries()].map(([label, days]) => ({ label, days }));
}

const SERIES_COLORS = ["#3457d5", "#c8322f", "#1f8a4c", "#b7791f", "#7b3fc4", "#0f8b9c"];

// Satisfaction over time: the positive rate of each day's boolean feedback (0-100%),
// a line per series; a day without boolean feedback is a gap, never a 0%.
function satisfactionChart(series, sinceMs, untilMs) {
  const dates = fillDays(
    series.flatMap((s) => [...s.days.keys()]).sort().map((date) => ({ date })),
    sinceMs,
    untilMs,
  ).map((d) => d.date);
  const W = 720, H = 180, padL = 44, padB = 28, padT = 12, padR = 8;
  const x = (i) => padL + ((W - padL - padR) * (i + 0.5)) / Math.max(dates.length, 1);
  const y = (rate) => padT + (H - padT - padB) * (1 - rate);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart satisfaction-chart", role: "img", "aria-label": "satisfaction over time" });
  for (const level of [0, 0.5, 1]) {
    chart.appendChild(svg("line", { x1: padL, x2: W - padR, y1: y(level), y2: y(level), class: level ? "grid-line" : "axis" }));
    chart.appendChild(svg("text", { x: padL - 6, y: y(level) + 4, "text-anchor": "end", class: "tick" }, `${level * 100}%`));
  }
  const every = Math.ceil(dates.length / 10);
  dates.forEach((date, i) => {
    if (i % every === 0) chart.appendChild(svg("text", { x: x(i), y: H - 8, "text-anchor": "middle", class: "tick" }, date.slice(5)));
  });
  series.forEach((s, k) => {
    const color = SERIES_COLORS[k % SERIES_COLORS.length];
    const g = svg("g", { class: "series", "data-series": s.label });
    let path = "";
    let pen = "M";
    dates.forEach((date, i) => {
      const d = s.days.get(date);
      const rated = d ? d.positive + d.negative : 0;
      if (!rated) {
        pen = "M";
        return;
      }
      const rate = d.positive / rated;
      path += `${pen}${x(i).toFixed(1)},${y(rate).toFixed(1)} `;
      pen = "L";
      const dot = svg("circle", { cx: x(i), cy: y(rate), r: 3.5, fill: color, class: "fb-day", "data-date": date, "data-rate": rate.toFixed(4), "data-positive": d.positive, "data-negative": d.negative });
      dot.appendChild(svg("title", {}, `${s.label ? `${s.label} · ` : ""}${date}: ${fmtRate(rate)} positive (${fmtInt(d.positive)} up, ${fmtInt(d.negative)} down)`));
      g.appendChild(dot);
    });
    if (path) g.insertBefore(svg("path", { d: path.trim(), stroke: color, fill: "none", "stroke-width": 2, class: "fb-line" }), g.firstChild);
    // The latest rate, written beside its point.
    const last = g.lastChild;
    if (last && last.tagName === "circle") {
      const rate = Number(last.getAttribute("data-rate"));
      g.appendChild(svg("text", { x: Number(last.getAttribute("cx")) - 7, y: y(rate) + (rate > 0.9 ? 14 : -7), "text-anchor": "end", class: "tick fb-last" }, fmtRate(rate)));
    }
    chart.appendChild(g);
  });
  const legend =
    series.length > 1 || (series.length === 1 && series[0].label)
      ? h(
          "p",
          { className: "legend muted small" },
          series.map((s, k) => h("span", { className: "legend-item", "data-series": s.label }, svg("svg", { viewBox: "0 0 10 10", width: 10, height: 10, class: "legend-mark" }, svg("circle", { cx: 5, cy: 5, r: 4, fill: SERIES_COLORS[k % SERIES_COLORS.length] })), " ", h("span", { className: "mono" }, s.label), "  ")),
        )
      : null;
  return h("div", { className: "satisfaction-box" }, chart, legend);
}

// The satisfaction section of the user and versions pages; the feedback read is its
// own request, so a store without feedback (or an older server) still shows the page.
function satisfactionSection(data, sinceMs, untilMs, empty, trim = false) {
  const section = h("section", { id: "satisfaction" }, h("h2", {}, "Satisfaction over time"));
  const rows = data && (data.rows ?? data.daily);
  const series = feedbackSeries(rows);
  if (!series.length) {
    section.appendChild(h("p", { className: "muted empty" }, data ? empty : "Feedback could not be read."));
    return section;
  }
  const until = (data && data.until_ms) ?? untilMs ?? Date.now();
  let since = (data && data.since_ms) ?? sinceMs;
  if (trim) {
    // From the first day with feedback (a week at least), not a month of empty days.
    const first = Math.min(...series.flatMap((s) => [...s.days.keys()].map((d) => Date.parse(d))));
    since = Math.max(since ?? first, Math.min(first, until - 6 * 86400000));
  }
  section.appendChild(satisfactionChart(series, since, until));
  section.appendChild(h("p", { className: "muted small" }, "The share of thumbs up among each day's yes/no feedback; overridden feedback is not counted."));
  return section;
}

async function userPage() {
  const p = params();
  const id = p.get("id");
  const days = Number(p.get("days") || 7);
  if (!id) return render(errorBox(new Error("no user id")));
  const title = () => h("h1", {}, "User ", h("span", { className: "mono" }, id));
  render(title(), h("p", { className: "muted" }, "Loading…"));
  let report, sessions, models, feedback;
  // The models over the report's period (the server's "now" is a few ms later: only a
  // trace started in between could differ).
  const since = Date.now() - days * 86400000;
  try {
    [report, sessions, models, feedback] = await Promise.all([
      api("/api/user", { id, days }),
      api("/api/sessions", { filter: `user = ${quote(id)}`, max_results: 50 }),
      api("/api/models", { filter: `user = ${quote(id)} AND trace.timestamp_ms > ${since}`, order_by: "cost DESC" }),
      api("/api/feedback/daily", { user: id, days }).catch(() => null),
    ]);
  } catch (err) {
    return render(title(), errorBox(err));
  }
  const daySelect = h(
    "select",
    { "aria-label": "period", onchange: (e) => go("/user", { id, days: e.target.value }) },
    [7, 30, 90, 365].map((d) => h("option", { value: d, selected: d === days }, `last ${d} days`)),
  );
  const tagTables = Object.entries(report.tags).map(([key, counts]) =>
    h("div", { className: "tag-breakdown" }, h("h3", { className: "mono" }, key), h("table", { className: "grid small" }, h("tbody", {}, Object.entries(counts).map(([v, n]) => h("tr", {}, h("td", { className: "mono" }, v), h("td", { className: "num" }, fmtInt(n))))))),
  );
  const userModelColumns = [
    { label: "Model", key: "model", cell: (m) => (m.model == null ? h("span", { className: "muted" }, "(no model)") : link("/traces", { filter: `user = ${quote(id)} AND span.model = ${quote(m.model)}` }, m.model, "mono")) },
    { label: "Provider", key: "provider", cell: (m) => m.provider ?? h("span", { className: "muted" }, "—") },
    { label: "LLM calls", key: "calls", num: true, cell: (m) => fmtInt(m.llm_calls) },
    ...llmColumns(),
  ];
  const sessionColumns = [
    { label: "Session", cell: (s) => sessionLink(s.session_id) },
    { label: "First seen", cell: (s) => timeCell(s.first_seen_ms) },
    { label: "Last seen", cell: (s) => timeCell(s.last_seen_ms) },
    { label: "Turns", num: true, cell: (s) => fmtInt(s.turns) },
    { label: "Errors", num: true, cell: (s) => fmtInt(s.errors) },
    ...feedbackColumns().map(({ sort, ...c }) => c),
    ...llmColumns(),
    { label: "First message", cell: (s) => h("span", { className: "preview" }, preview(requestText(parseMaybe(s.first_request_preview)), 80)) },
  ];
  render(
    h("p", { className: "crumbs" }, link("/users", {}, "Users"), " / "),
    title(),
    h("div", { className: "toolbar" }, daySelect, " ", link("/traces", { filter: `user = ${quote(id)}` }, "this user's traces →")),
    stats([
      ["Traces", fmtInt(report.traces)],
      ["Sessions", fmtInt(report.sessions)],
      ["Errors", `${fmtInt(report.errors)} (${fmtRate(report.error_rate)})`],
      ["Mean latency", fmtDur(report.mean_latency_ms)],
      ["First seen", fmtTime(report.first_seen_ms)],
      ["Last seen", fmtTime(report.last_seen_ms)],
      ...feedbackStats(report),
      ...llmStats(report),
    ]),
    h(
      "div",
      { className: "chart-row" },
      h("section", { id: "daily-activity" }, h("h2", {}, "Daily activity"), activityChart(report.daily_activity, report.since_ms, report.until_ms)),
      h("section", { id: "daily-cost" }, h("h2", {}, "Daily cost"), costChart(report.daily_activity, report.since_ms, report.until_ms)),
      satisfactionSection(feedback, report.since_ms, report.until_ms, "No yes/no feedback from this user in this period."),
    ),
    models.models.length ? h("section", { id: "user-models" }, h("h2", {}, "Models"), table(userModelColumns, models.models)) : null,
    h("h2", {}, "Tags"),
    tagTables.length ? h("div", { className: "tag-grid" }, tagTables) : h("p", { className: "muted" }, "No tags in this period."),
    h("section", { id: "user-sessions" }, h("h2", {}, "Sessions"), sessions.sessions.length ? table(sessionColumns, sessions.sessions) : h("p", { className: "muted" }, "No sessions.")),
  );
}

function barChart(rows, label, value, errorRate) {
  const W = 720, rowH = 26, padL = 160, padR = 120;
  const H = rows.length * rowH + 10;
  const max = Math.max(1, ...rows.map(value));
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "traces by value" });
  rows.forEach((r, i) => {
    const y = 5 + i * rowH;
    const w = ((W - padL - padR) * value(r)) / max;
    const g = svg("g", { class: "row" });
    g.appendChild(svg("text", { x: padL - 8, y: y + 17, "text-anchor": "end", class: "label" }, preview(label(r), 22)));
    g.appendChild(svg("rect", { x: padL, y: y + 4, width: Math.max(1, w), height: rowH - 8, class: "bar" }));
    const errW = w * errorRate(r);
    if (errW > 0) g.appendChild(svg("rect", { x: padL + w - errW, y: y + 4, width: errW, height: rowH - 8, class: "bar err" }));
    g.appendChild(svg("text", { x: padL + w + 6, y: y + 17, class: "tick" }, `${fmtInt(value(r))} · ${fmtRate(errorRate(r))} err`));
    chart.appendChild(g);
  });
  return chart;
}

async function versionsPage() {
  const p = params();
  const key = p.get("key") || "app_version";
  const filter = p.get("filter") || "";
  const order = p.get("order_by") || "";
  const keyInput = h("input", { type: "text", name: "key", value: key, list: "known-keys", "aria-label": "metadata key", spellcheck: "false" });
  const known = h("datalist", { id: "known-keys" }, ["app_version", "mlflow.source.type", "deployment_id", "mlflow.source.git.commit", "mlflow.source.name"].map((k) => h("option", { value: k })));
  const box = filterBox(filter, (f) => go("/versions", { key: keyInput.value.trim(), filter: f }), "trace.timestamp_ms > 0  (only matching traces are counted)");
  const keyForm = h("form", { className: "filter", onsubmit: (e) => { e.preventDefault(); go("/versions", { key: keyInput.value.trim(), filter }); } }, h("label", {}, "metadata key "), keyInput, known, h("button", { type: "submit" }, "Show"));
  const results = h("div", { id: "results" }, h("p", { className: "muted" }, "Loading…"));
  render(h("h1", {}, "Versions"), h("div", { className: "toolbar" }, keyForm, box), results);
  let data, feedback;
  try {
    [data, feedback] = await Promise.all([
      api("/api/versions", { key, filter, order_by: order }),
      api("/api/feedback/daily", { metadata_key: key, filter }).catch(() => null),
    ]);
  } catch (err) {
    if (err.status === 400) box.showError(err);
    results.replaceChildren(errorBox(err));
    return;
  }
  const columns = [
    { label: key, cell: (r) => link("/traces", { filter: `metadata.\`${key.replaceAll("`", "")}\` = ${quote(r.value)}` }, r.value, "mono") },
    { label: "Traces", sort: "traces", num: true, cell: (r) => fmtInt(r.traces) },
    { label: "Users", sort: "users", num: true, cell: (r) => fmtInt(r.users) },
    { label: "Errors", sort: "errors", num: true, cell: (r) => fmtInt(r.errors) },
    { label: "Error rate", num: true, cell: (r) => fmtRate(r.error_rate) },
    { label: "Mean latency", sort: "mean_latency_ms", num: true, cell: (r) => fmtDur(r.mean_latency_ms) },
    ...feedbackColumns(),
    ...llmColumns(),
    { label: "First seen", sort: "first_seen", cell: (r) => timeCell(r.first_seen_ms) },
    { label: "Last seen", sort: "last_seen", cell: (r) => timeCell(r.last_seen_ms) },
  ];
  const sort = { current: order || "traces DESC", onSort: (o) => go("/versions", { key, filter, order_by: o }) };
  if (!data.rows.length) {
    results.replaceChildren(h("p", { className: "muted empty" }, `No trace has the metadata key ${key}.`));
    return;
  }
  results.replaceChildren(
    table(columns, data.rows, sort),
    barChart(data.rows, (r) => r.value, (r) => r.traces, (r) => r.error_rate),
    satisfactionSection(feedback, null, Date.now(), `No yes/no feedback on traces with ${key} yet.`, true),
  );
}

// Models: the LLM calls that count in their traces' totals, per model and provider.
async function modelsPage() {
  const p = params();
  const filter = p.get("filter") || "";
  const order = p.get("order_by") || "";
  const box = filterBox(filter, (f) => go("/models", { filter: f, order_by: order }), "user = 'user-123'  (only calls in matching traces are counted)");
  const results = h("div", { id: "results" }, h("p", { className: "muted" }, "Loading…"));
  render(h("h1", {}, "Models"), h("div", { className: "toolbar" }, box), results);
  let data;
  try {
    data = await api("/api/models", { filter, order_by: order });
  } catch (err) {
    if (err.status === 400) box.showError(err);
    results.replaceChildren(errorBox(err));
    return;
  }
  const none = (v, text) => (v == null ? h("span", { className: "muted" }, text) : v);
  const columns = [
    { label: "Model", key: "model", sort: "model", cell: (m) => (m.model == null ? none(null, "(no model)") : link("/traces", { filter: `span.model = ${quote(m.model)}` }, m.model, "mono")) },
    { label: "Provider", key: "provider", cell: (m) => none(m.provider, "—") },
    { label: "LLM calls", key: "calls", sort: "llm_calls", num: true, cell: (m) => fmtInt(m.llm_calls) },
    { label: "Traces", key: "traces", sort: "traces", num: true, cell: (m) => fmtInt(m.traces) },
    { label: "Users", key: "users", sort: "users", num: true, cell: (m) => fmtInt(m.users) },
    // The feedback on the traces that called the model (not sortable here).
    ...(data.models.some((m) => "feedback_count" in m) ? feedbackColumns().map(({ sort, ...c }) => c) : []),
    { label: "Input tokens", key: "input", sort: "input_tokens", num: true, cell: (m) => fmtInt(m.input_tokens) },
    { label: "Output tokens", key: "output", sort: "output_tokens", num: true, cell: (m) => fmtInt(m.output_tokens) },
    { label: "Total tokens", key: "tokens", sort: "total_tokens", num: true, cell: (m) => fmtInt(m.total_tokens) },
    { label: "Cost", key: "cost", sort: "cost", num: true, cell: costCell },
    { label: "Unpriced calls", key: "unpriced", sort: "unpriced_calls", num: true, cell: (m) => (m.unpriced_calls ? h("span", { className: "unpriced" }, fmtInt(m.unpriced_calls)) : "0") },
  ];
  if (!data.models.length) {
    results.replaceChildren(h("p", { className: "muted empty" }, "No LLM calls yet: spans with mlflow.chat.tokenUsage or mlflow.llm.model appear here."));
    return;
  }
  results.replaceChildren(
    table(columns, data.models, { current: order || "llm_calls DESC", onSort: (o) => go("/models", { filter, order_by: o }) }),
    h("p", { className: "muted small" }, "A call inside another call that reports usage is counted once, in the outer call, as in the traces' totals. Unpriced calls have no known price (set one with sessiontrace.set_model_price); their tokens count, their cost is not $0."),
  );
}

// -- the trace page: span tree timeline, inputs/outputs, metadata, editable tags -----

function spanTree(spans) {
  const byParent = new Map();
  const ids = new Set(spans.map((s) => s.span_id));
  for (const s of spans) {
    const parent = s.parent_id && ids.has(s.parent_id) ? s.parent_id : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(s);
  }
  const out = [];
  const walk = (parent, depth) => {
    for (const s of (byParent.get(parent) || []).sort((a, b) => a.start_time_ns - b.start_time_ns)) {
      out.push({ span: s, depth });
      walk(s.span_id, depth + 1);
    }
  };
  walk(null, 0);
  return out;
}

// An LLM span's numbers, read from its attributes as the store reads them
// (sessiontrace/llm/_rollup.py: llm_call); null for other spans. Attribute values
// are untrusted and of any type: only numbers count, only strings are names.
const ATTR = {
  usage: "mlflow.chat.tokenUsage",
  model: "mlflow.llm.model",
  provider: "mlflow.llm.provider",
  cost: "mlflow.llm.cost",
  source: "sessiontrace.llm.price_source",
  unpriced: "sessiontrace.llm.unpriced",
  usageMissing: "sessiontrace.llm.usage_missing",
};
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const tokenCount = (v) => (Number.isInteger(v) && v >= 0 ? v : null);
const money = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const str = (v) => (typeof v === "string" ? v : null);

function spanLlm(span) {
  const a = isObject(span.attributes) ? span.attributes : {};
  const has = (k) => Object.prototype.hasOwnProperty.call(a, k);
  if (!has(ATTR.usage) && !has(ATTR.model)) return null;
  const u = isObject(a[ATTR.usage]) ? a[ATTR.usage] : null;
  const input = u ? tokenCount(u.input_tokens ?? 0) : null;
  const output = u ? tokenCount(u.output_tokens ?? 0) : null;
  const hasUsage = input !== null && output !== null;
  const c = isObject(a[ATTR.cost]) ? a[ATTR.cost] : {};
  const inputCost = money(c.input_cost);
  const outputCost = money(c.output_cost);
  let cost = money(c.total_cost);
  if (cost === null && inputCost !== null && outputCost !== null) cost = inputCost + outputCost;
  return {
    model: str(a[ATTR.model]),
    provider: str(a[ATTR.provider]),
    hasUsage,
    input: hasUsage ? input : 0,
    output: hasUsage ? output : 0,
    total: hasUsage ? tokenCount(u.total_tokens) ?? input + output : 0,
    cacheRead: u ? tokenCount(u.cache_read_input_tokens) : null,
    cacheWrite: u ? tokenCount(u.cache_creation_input_tokens) : null,
    reasoning: u ? tokenCount(u.reasoning_tokens) : null,
    cost,
    inputCost,
    outputCost,
    source: str(a[ATTR.source]),
    usageMissing: a[ATTR.usageMissing] === true,
  };
}

// The LLM spans that an enclosing LLM span with usage already counts (MLflow's rule,
// as in the trace's totals): shown, but not added again.
function hiddenLlmSpans(spans, llmById) {
  const parents = new Map(spans.map((s) => [s.span_id, s.parent_id]));
  const hidden = new Set();
  for (const s of spans) {
    if (!llmById.has(s.span_id)) continue;
    let p = parents.get(s.span_id);
    for (let n = 0; p != null && n < 10000; n++, p = parents.get(p)) {
      const up = llmById.get(p);
      if (up && up.hasUsage) {
        hidden.add(s.span_id);
        break;
      }
    }
  }
  return hidden;
}

// One call's cost as costCell shows a record's.
const callCost = (llm) => costCell({ llm_calls: 1, cost: llm.cost, unpriced_calls: llm.cost === null ? 1 : 0 });

function llmDetail(llm, hidden) {
  const row = (k, ...v) => h("tr", {}, h("th", {}, k), h("td", {}, v));
  // Counts of 0 are left out: OpenAI reports "0 cached" on every call.
  const inputNotes = [llm.cacheRead ? `${fmtInt(llm.cacheRead)} cache read` : null, llm.cacheWrite ? `${fmtInt(llm.cacheWrite)} cache write` : null].filter(Boolean);
  let costNote = null;
  if (llm.cost !== null && (llm.inputCost !== null || llm.outputCost !== null)) costNote = ` (input ${fmtUsd(llm.inputCost ?? 0)}, output ${fmtUsd(llm.outputCost ?? 0)})`;
  else if (llm.cost === null) costNote = llm.hasUsage ? (llm.model ? " no price is known for this model (sessiontrace.set_model_price sets one)" : " the call has no model name to price") : " the call reported no token usage";
  return h(
    "table",
    { className: "grid small llm-call", id: "llm-call" },
    h(
      "tbody",
      {},
      row("Model", h("span", { className: "mono llm-model" }, llm.model ?? "—")),
      row("Provider", llm.provider ?? "—"),
      row("Input tokens", h("span", { className: "llm-input" }, llm.hasUsage ? fmtInt(llm.input) : "—"), inputNotes.length ? h("span", { className: "muted" }, ` (incl. ${inputNotes.join(", ")})`) : null),
      row("Output tokens", h("span", { className: "llm-output" }, llm.hasUsage ? fmtInt(llm.output) : "—"), llm.reasoning ? h("span", { className: "muted" }, ` (incl. ${fmtInt(llm.reasoning)} reasoning)`) : null),
      row("Total tokens", h("span", { className: "llm-total" }, llm.hasUsage ? fmtInt(llm.total) : "—")),
      row("Cost", h("span", { className: "llm-cost" }, callCost(llm)), costNote ? h("span", { className: "muted" }, costNote) : null),
      llm.source ? row("Price source", h("span", { className: "mono" }, llm.source)) : null,
      row("In the trace's totals", hidden ? h("span", { className: "muted" }, "no: an enclosing call reports this usage") : "yes"),
    ),
  );
}

async function tracePage() {
  const id = params().get("id");
  if (!id) return render(errorBox(new Error("no trace id")));
  let data;
  try {
    data = await api("/api/trace", { id });
  } catch (err) {
    return render(h("h1", {}, "Trace ", h("span", { className: "mono" }, id)), errorBox(err));
  }
  const info = data.info;
  const spans = data.data.spans;
  const md = info.trace_metadata || {};
  const user = md["mlflow.trace.user"];
  const session = md["mlflow.trace.session"];
  const tree = spanTree(spans);
  const llmById = new Map();
  for (const s of spans) {
    const llm = spanLlm(s);
    if (llm) llmById.set(s.span_id, llm);
  }
  const hidden = hiddenLlmSpans(spans, llmById);
  const t0 = Math.min(...spans.map((s) => s.start_time_ns));
  const t1 = Math.max(...spans.map((s) => s.end_time_ns ?? s.start_time_ns));
  const total = Math.max(1, t1 - t0);
  const detail = h("div", { className: "span-detail", id: "span-detail" });
  const rows = tree.map(({ span, depth }) => {
    const bar = h("div", { className: `tl-bar${span.status === "ERROR" ? " err" : ""}` });
    bar.style.left = `${((span.start_time_ns - t0) / total) * 100}%`;
    bar.style.width = `${Math.max(0.4, (((span.end_time_ns ?? t1) - span.start_time_ns) / total) * 100)}%`;
    const name = h("div", { className: "tl-name" }, h("span", { className: "type" }, span.span_type), " ", span.name);
    name.style.paddingLeft = `${depth * 16 + 4}px`;
    const llm = llmById.get(span.span_id);
    const isHidden = hidden.has(span.span_id);
    const llmCell = h(
      "div",
      { className: `tl-llm${isHidden ? " hidden-call" : ""}`, title: isHidden ? "inside a call that reports usage: not counted again in the totals" : null },
      llm ? [h("span", { className: "mono tl-model" }, llm.model ?? "—"), " · ", h("span", { className: "tl-tokens" }, llm.hasUsage ? `${fmtInt(llm.total)} tok` : "no usage"), " · ", h("span", { className: "tl-cost" }, callCost(llm))] : null,
    );
    const row = h(
      "button",
      { type: "button", className: "tl-row", "data-span-id": span.span_id, onclick: () => select(span, row) },
      name,
      h("div", { className: "tl-track" }, bar),
      llmCell,
      h("div", { className: "tl-dur" }, fmtDur(span.end_time_ns == null ? null : (span.end_time_ns - span.start_time_ns) / 1e6)),
    );
    return row;
  });
  function select(span, row) {
    for (const r of rows) r.classList.toggle("selected", r === row);
    const kv = (obj) => {
      const e = Object.entries(obj || {});
      return e.length ? h("table", { className: "grid small" }, h("tbody", {}, e.map(([k, v]) => h("tr", {}, h("th", { className: "mono" }, k), h("td", {}, h("pre", {}, pretty(v))))))) : h("p", { className: "muted" }, "none");
    };
    detail.replaceChildren();
    append(detail, [
      h("h3", {}, span.name, " ", statusBadge(span.status)),
      span.status_message ? h("p", { className: "errtext" }, span.status_message) : null,
      llmById.has(span.span_id) ? [h("h4", {}, "LLM call"), llmDetail(llmById.get(span.span_id), hidden.has(span.span_id))] : null,
      h("div", { className: "io" }, h("div", {}, h("h4", {}, "Inputs"), h("pre", { className: "io-inputs" }, pretty(span.inputs))), h("div", {}, h("h4", {}, "Outputs"), h("pre", { className: "io-outputs" }, pretty(span.outputs)))),
      h("h4", {}, "Attributes"),
      kv(span.attributes),
      span.events && span.events.length ? [h("h4", {}, "Events"), h("ul", {}, span.events.map((ev) => h("li", {}, h("b", {}, ev.name), " ", h("pre", {}, pretty(ev.attributes)))))] : null,
    ]);
  }
  const mdRows = Object.entries(md).sort(([a], [b]) => a.localeCompare(b));
  const tagsSection = h("div", { id: "tags" });
  renderTags(tagsSection, info.trace_id, info.tags || {});
  render(
    h("p", { className: "crumbs" }, link("/traces", {}, "Traces"), " / ", session != null ? [link("/session", { id: session }, `session ${session}`), " / "] : null),
    h("h1", {}, info.name ?? "Trace", " ", statusBadge(info.state)),
    stats([
      ["Trace", h("span", { className: "mono" }, info.trace_id)],
      ["Time", fmtTime(info.request_time)],
      ["Duration", fmtDur(info.execution_duration)],
      ["User", userLink(user)],
      ["Session", sessionLink(session)],
      ...(info.llm_calls ? llmStats(info) : []),
    ]),
    h("h2", {}, "Spans"),
    h("div", { className: "timeline" }, rows),
    detail,
    h("h2", {}, "Feedback"),
    h("div", { id: "feedback" }, feedbackList(info.assessments, { withTime: true }) ?? h("p", { className: "muted" }, "No feedback on this trace.")),
    h("h2", {}, "Tags"),
    tagsSection,
    h("h2", {}, "Metadata ", h("span", { className: "muted small" }, "(immutable)")),
    h("table", { className: "grid small", id: "metadata" }, h("tbody", {}, mdRows.map(([k, v]) => h("tr", {}, h("th", { className: "mono" }, k), h("td", { className: "mono" }, v))))),
  );
  if (tree.length) select(tree[0].span, rows[0]);
}

function renderTags(container, traceId, tags) {
  const status = h("div", { className: "tag-status", role: "status" });
  const save = async (key, value, method) => {
    status.textContent = "Saving…";
    try {
      await writeApi(method, "/api/trace/tags", method === "PUT" ? { trace_id: traceId, key, value } : { trace_id: traceId, key });
      const next = { ...tags };
      if (method === "PUT") next[key] = value;
      else delete next[key];
      renderTags(container, traceId, next);
    } catch (err) {
      status.textContent = `Not saved: ${err.message}`;
      status.className = "tag-status errtext";
    }
  };
  const rows = Object.entries(tags)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => {
      const input = h("input", { type: "text", value: v, "aria-label": `tag ${k}`, "data-tag-key": k });
      return h(
        "tr",
        {},
        h("th", { className: "mono" }, k),
        h("td", {}, input),
        h("td", {}, h("button", { type: "button", className: "save-tag", onclick: () => save(k, input.value, "PUT") }, "Save"), " ", h("button", { type: "button", className: "delete-tag", onclick: () => save(k, null, "DELETE") }, "Delete")),
      );
    });
  const newKey = h("input", { type: "text", id: "new-tag-key", placeholder: "key", "aria-label": "new tag key" });
  const newValue = h("input", { type: "text", id: "new-tag-value", placeholder: "value", "aria-label": "new tag value" });
  const add = h(
    "form",
    {
      className: "add-tag",
      onsubmit: (e) => {
        e.preventDefault();
        if (newKey.value.trim()) save(newKey.value.trim(), newValue.value, "PUT");
      },
    },
    newKey,
    newValue,
    h("button", { type: "submit", id: "add-tag" }, "Add tag"),
  );
  container.replaceChildren(rows.length ? h("table", { className: "grid small tags-table" }, h("tbody", {}, rows)) : h("p", { className: "muted" }, "No tags."), add, status);
}

// -- routing ----------------------------------------------------------------------

const PAGES = {
  "/": tracesPage,
  "/traces": tracesPage,
  "/trace": tracePage,
  "/sessions": sessionsPage,
  "/session": sessionPage,
  "/users": usersPage,
  "/user": userPage,
  "/versions": versionsPage,
  "/models": modelsPage,
};

function route() {
  const page = PAGES[location.pathname] || tracesPage;
  const section = { "/": "traces", "/trace": "traces", "/session": "sessions", "/user": "users" }[location.pathname] || location.pathname.slice(1);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === section);
  document.title = `${section || "traces"} · sessiontrace`;
  window.scrollTo(0, 0);
  return page().catch((err) => render(errorBox(err)));
}

window.addEventListener("popstate", route);
route();
