// The dashboard: reads /ui/api/... every few seconds and draws the rules,
// the budgets' burn-down charts and the alerts; the explain form posts to
// /ui/api/explain. Plain JavaScript, no dependencies; every value from the
// server goes into the page as text, never as markup.
"use strict";

const REFRESH_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";

// el builds an element: attrs are set as attributes ("class", "data-x"…),
// children are nodes or strings (as text).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// getJSON fetches a dashboard API and throws an Error carrying the server's
// message on a non-2xx answer or an unreachable server.
async function getJSON(url, init) {
  let resp;
  try {
    resp = await fetch(url, Object.assign({ cache: "no-store", headers: { "Accept": "application/json" } }, init || {}));
  } catch (e) {
    throw new Error("cannot reach the control plane (" + e.message + ")");
  }
  let body = null;
  try {
    body = await resp.json();
  } catch (e) {
    body = null;
  }
  if (!resp.ok) {
    const err = new Error((body && body.error) || ("HTTP " + resp.status));
    err.violations = (body && body.violations) || [];
    throw err;
  }
  return body;
}

function showError(id, err) {
  const p = document.getElementById(id);
  if (err) {
    p.textContent = err.message || String(err);
    p.hidden = false;
  } else {
    p.hidden = true;
    p.textContent = "";
  }
}

// Numbers: rates to three significant digits, counts whole.
function fmtRate(x) {
  x = Number(x) || 0;
  if (x === 0) return "0";
  if (Math.abs(x) >= 100) return Math.round(x).toLocaleString("en");
  return String(Number(x.toPrecision(3)));
}

function fmtPercent(x) {
  return String(Number((Number(x) * 100).toPrecision(3))) + " %";
}

function fmtFactor(x) {
  return "×" + String(Number(Number(x).toPrecision(3)));
}

function fmtMoney(micros, currency) {
  const units = Number(micros) / 1e6;
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency: currency || "USD" }).format(units);
  } catch (e) {
    return (currency || "") + " " + units.toFixed(2);
  }
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return d.toISOString().slice(0, 16).replace("T", " ");
}

// matchSummary lists a rule's conditions other than "*".
function matchSummary(r) {
  const parts = [];
  const fields = [["service", r.service_name], ["type", r.service_type], ["host", r.host], ["method", r.http_method], ["path", r.url_path], ["arn", r.resource_arn]];
  for (const [name, v] of fields) {
    if (v && v !== "*") parts.push(name + "=" + v);
  }
  for (const k of Object.keys(r.attributes || {}).sort()) parts.push(k + "=" + r.attributes[k]);
  return parts.length ? parts.join("  ") : "everything";
}

function budgetChips(budgets) {
  const td = el("td", { "class": "budgets-cell" });
  if (!budgets || budgets.length === 0) {
    td.append(el("span", { "class": "empty" }, "none"));
    return td;
  }
  for (const b of budgets) {
    const limiting = Number(b.fixed_rate_factor) < 1 || Number(b.reservoir_factor) < 1;
    let text = b.budget_name;
    if (b.mode === "MODE_ALERT_ONLY") {
      text += " (alerts only)";
    } else if (limiting) {
      text += " fixed " + fmtFactor(b.fixed_rate_factor) + ", reservoir " + fmtFactor(b.reservoir_factor);
    } else {
      text += " (not limiting)";
    }
    if (b.service_names && b.service_names.length) text += " for " + b.service_names.join(", ");
    if (b.exhausted) text += ", exhausted";
    const cls = "factor" + (b.exhausted ? " exhausted" : limiting ? " limiting" : "");
    td.append(el("span", { "class": cls, "data-budget": b.budget_name }, text));
  }
  return td;
}

// currentCell says how many of a rule's instances run it as it is: "all",
// "none", or "2 of 3", with the rules version the others have yet to apply.
function currentCell(rs) {
  const n = Number(rs.instances) || 0, cur = Number(rs.instances_current) || 0;
  let text = "-", title = null, cls = "num";
  if (n > 0 && cur >= n) {
    text = "all";
  } else if (n > 0) {
    text = cur === 0 ? "none" : cur + " of " + n;
    title = (n - cur) + " instance" + (n - cur === 1 ? "" : "s") + " behind rules version " + rs.rule_version + ", which made the rule what it is";
    cls = "num behind";
  }
  return el("td", { "class": cls, "data-field": "instances_current", "title": title }, text);
}

async function refreshRules() {
  const data = await getJSON("api/fleet?page_size=1000");
  const tbody = document.querySelector("#rules tbody");
  const rows = [];
  for (const rs of data.rules || []) {
    const r = rs.rule || {};
    const idle = Number(rs.instances) === 0;
    rows.push(el("tr", { "data-rule": r.name, "class": idle ? "idle" : null },
      el("td", { "class": "num", "data-field": "position" }, rs.position),
      el("td", { "class": "rule", "data-field": "name" }, r.name),
      el("td", { "class": "match" }, matchSummary(r)),
      el("td", { "class": "num", "data-field": "request_rate" }, fmtRate(rs.request_rate)),
      el("td", { "class": "num", "data-field": "sampled_rate" }, fmtRate(rs.sampled_rate)),
      el("td", { "class": "num", "data-field": "instances" }, String(Number(rs.instances) || 0)),
      currentCell(rs),
      el("td", { "class": "num", "data-field": "reservoir" }, String(Number(r.reservoir_size) || 0)),
      el("td", { "class": "num", "data-field": "quota_granted" }, fmtRate(rs.quota_granted)),
      el("td", { "class": "num", "data-field": "fixed_rate" }, fmtPercent(r.fixed_rate)),
      budgetChips(rs.budgets)));
  }
  if (rows.length === 0) {
    rows.push(el("tr", {}, el("td", { colspan: 11, "class": "empty" }, "No rules loaded yet: this replica has not read them from its store.")));
  }
  tbody.replaceChildren(...rows);
  const more = document.getElementById("rules-more");
  const shown = (data.rules || []).length;
  more.hidden = data.total_rules <= shown;
  more.textContent = "Showing the first " + shown + " of " + data.total_rules + " rules.";
  return data;
}

// burnChart draws a budget's month: the spend so far (hourly, cumulative),
// the forecast to month end, the cap, when enforcement started and now.
function burnChart(v, status, b, nowISO) {
  const W = 560, H = 220, L = 64, R = 16, T = 14, B = 28;
  const start = Date.parse(v.burn.month_start), end = Date.parse(v.burn.month_end);
  const now = Math.min(Date.parse(nowISO), end);
  const spent = v.burn.spent_micros.map(Number);
  const last = spent.length ? spent[spent.length - 1] : 0;
  const cap = Number(b.monthly_amount_micros);
  const forecast = Number(status.forecast_micros);
  const top = Math.max(cap, forecast, last, 1) * 1.12;
  const x = (t) => L + (W - L - R) * (t - start) / (end - start);
  const y = (m) => T + (H - T - B) * (1 - m / top);
  const currency = status.currency_code || b.currency_code;
  const title = b.name + ": " + fmtMoney(last, currency) + " spent of a " + fmtMoney(cap, currency) + " cap, forecast " + fmtMoney(forecast, currency) + " at month end";

  const s = svg("svg", {
    "class": "burn", viewBox: "0 0 " + W + " " + H, role: "img",
    "aria-label": title,
    "data-spent-micros": last, "data-cap-micros": cap, "data-forecast-micros": forecast,
  });
  s.append(svg("title", {}, title));
  // Axes, with a tick a week and at the cap's halves.
  s.append(svg("line", { "class": "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  s.append(svg("line", { "class": "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (let d = 0; d * 86400e3 < end - start; d += 7) {
    const t = start + d * 86400e3;
    s.append(svg("text", { "class": "tick", x: x(t), y: H - B + 16, "text-anchor": "middle" }, new Date(t).toISOString().slice(5, 10)));
  }
  for (const m of [0, cap / 2, cap]) {
    s.append(svg("text", { "class": "tick", x: L - 6, y: y(m) + 4, "text-anchor": "end" }, fmtMoney(m, currency)));
  }
  // The cap.
  s.append(svg("line", { "class": "cap", x1: L, y1: y(cap), x2: W - R, y2: y(cap) }));
  s.append(svg("text", { "class": "cap-label", x: W - R - 4, y: y(cap) - 4, "text-anchor": "end" }, "cap " + fmtMoney(cap, currency)));
  // The spend so far: one point at the end of each hour, the last at now.
  const pts = [[x(start), y(0)]];
  spent.forEach((m, h) => {
    const t = Math.min(start + (h + 1) * 3600e3, now);
    pts.push([x(t), y(m)]);
  });
  const line = pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ");
  const lastX = pts[pts.length - 1][0];
  s.append(svg("polygon", { "class": "area", points: line + " " + lastX.toFixed(1) + "," + y(0).toFixed(1) }));
  s.append(svg("polyline", { "class": "spent", points: line }));
  // The forecast, from now to the month's end.
  if (status.computed_time) {
    s.append(svg("line", { "class": "forecast", x1: x(now), y1: y(last), x2: x(end), y2: y(forecast) }));
    s.append(svg("text", { "class": "forecast-label", x: W - R - 4, y: y(forecast) + (forecast > cap ? -6 : 14), "text-anchor": "end" }, "forecast " + fmtMoney(forecast, currency)));
  }
  s.append(svg("line", { "class": "now", x1: x(now), y1: T, x2: x(now), y2: H - B }));
  if (v.enforcement_started) {
    const t = Date.parse(v.enforcement_started);
    s.append(svg("line", { "class": "enforce", x1: x(t), y1: T, x2: x(t), y2: H - B }));
    s.append(svg("text", { "class": "enforce-label", x: x(t) + 4, y: T + 10 }, "enforcement"));
  }
  return s;
}

function legend() {
  const item = (kind, text) => el("li", {}, el("span", { "class": "swatch swatch-" + kind }), text);
  return el("ul", { "class": "legend", "aria-hidden": "true" },
    item("spend", "spent"), item("forecast", "forecast"), item("cap", "cap"), item("enforce", "enforcement started"));
}

function budgetCard(v, nowISO) {
  const b = v.budget;
  const st = v.status || {};
  const currency = st.currency_code || b.currency_code;
  const over = Number(st.forecast_ratio) > 1;
  const limiting = Number(st.fixed_rate_factor) < 1 || Number(st.reservoir_factor) < 1;
  const dl = el("dl", {},
    el("div", {}, el("dt", {}, "Spent"), el("dd", { "data-field": "spent" }, fmtMoney(st.spent_micros, currency) + " (" + fmtPercent(st.spent_ratio || 0) + ")")),
    el("div", {}, el("dt", {}, "Forecast at month end"), el("dd", { "data-field": "forecast", "class": over ? "over" : null }, st.computed_time ? fmtMoney(st.forecast_micros, currency) : "not decided yet")),
    el("div", {}, el("dt", {}, "Cap"), el("dd", { "data-field": "cap" }, fmtMoney(b.monthly_amount_micros, currency))),
    el("div", {}, el("dt", {}, "Factors in force"), el("dd", { "data-field": "factors" }, b.mode === "MODE_ALERT_ONLY" ? "none (alerts only)" : limiting ? "fixed " + fmtFactor(st.fixed_rate_factor) + ", reservoir " + fmtFactor(st.reservoir_factor) : "none")),
    el("div", {}, el("dt", {}, "Enforcement started"), el("dd", { "data-field": "enforcement" }, v.enforcement_started ? fmtTime(v.enforcement_started) + " UTC" : "no")),
    el("div", {}, el("dt", {}, "Sampled traces"), el("dd", { "data-field": "sampled" }, Number(st.sampled_traces || 0).toLocaleString("en"))));
  const card = el("article", { "class": "budget", "data-budget": b.name, "aria-labelledby": "budget-" + b.name },
    el("h3", { id: "budget-" + b.name }, b.name, el("span", { "class": "mode" }, b.mode === "MODE_ALERT_ONLY" ? "alerts only" : "enforced")),
    st.exhausted ? el("p", { "class": "error" }, "Exhausted: only the floor is traced.") : null,
    dl,
    burnChart(v, st, b, nowISO),
    legend(),
    v.burn.error ? el("p", { "class": "error" }, v.burn.error) : null);
  return card;
}

async function refreshBudgets() {
  const data = await getJSON("api/budgets");
  const list = data.budgets || [];
  document.getElementById("budgets-empty").hidden = list.length > 0;
  document.getElementById("budgets").replaceChildren(...list.map((v) => budgetCard(v, data.now)));
  const more = document.getElementById("budgets-more");
  more.hidden = !data.more;
  more.textContent = data.more + " more budgets are not shown.";
  if (data.warning) throw new Error(data.warning);
  return data;
}

const KINDS = {
  KIND_SPEND_THRESHOLD: "spend threshold",
  KIND_FORECAST_OVER: "forecast over",
  KIND_ENFORCEMENT_STARTED: "enforcement started",
  KIND_EXHAUSTED: "exhausted",
};

async function refreshAlerts() {
  const data = await getJSON("api/alerts");
  const list = data.alerts || [];
  document.getElementById("alerts-empty").hidden = list.length > 0;
  document.getElementById("alerts").hidden = list.length === 0;
  document.querySelector("#alerts tbody").replaceChildren(...list.map((a) => el("tr", { "data-alert": a.id },
    el("td", {}, fmtTime(a.fire_time)),
    el("td", {}, a.budget_name),
    el("td", {}, KINDS[a.kind] || a.kind),
    el("td", {}, a.message))));
  return data;
}

let refreshes = 0;

async function refresh() {
  const parts = [["rules-error", refreshRules], ["budgets-error", refreshBudgets], ["alerts-error", refreshAlerts]];
  const results = await Promise.allSettled(parts.map(([, f]) => f()));
  let fleet = null;
  results.forEach((r, i) => {
    showError(parts[i][0], r.status === "rejected" ? r.reason : null);
    if (i === 0 && r.status === "fulfilled") fleet = r.value;
  });
  refreshes++;
  document.body.dataset.refreshes = String(refreshes);
  const meta = document.getElementById("meta");
  if (fleet) {
    meta.textContent = "Rules version " + fleet.rules_version + " · read " + fmtTime(fleet.read_time) + " UTC";
  } else {
    meta.textContent = "Last refresh failed at " + fmtTime(new Date().toISOString()) + " UTC";
  }
}

function explainRequest(form) {
  const req = {};
  for (const name of ["service_name", "service_type", "host", "http_method", "url_path", "resource_arn"]) {
    const v = form.elements[name].value.trim();
    if (v) req[name] = v;
  }
  const attrs = {};
  for (const line of form.elements.attributes.value.split("\n")) {
    const t = line.trim();
    if (!t) continue;
    const eq = t.indexOf("=");
    if (eq < 0) throw new Error("attributes: \"" + t + "\" is not key=value");
    attrs[t.slice(0, eq).trim()] = t.slice(eq + 1).trim();
  }
  if (Object.keys(attrs).length) req.attributes = attrs;
  return req;
}

function renderExplain(ans) {
  const out = document.getElementById("explain-result");
  const nodes = [];
  if (!ans.rule) {
    nodes.push(el("p", { "class": "answer" }, ans.summary));
    out.replaceChildren(...nodes);
    return;
  }
  nodes.push(el("p", { "class": "answer", "data-field": "matched" },
    "Matches ", el("strong", { "data-rule": ans.rule.name }, ans.rule.name), " (position " + ans.position + ")"));
  nodes.push(el("p", { "data-field": "summary" }, ans.summary));
  nodes.push(el("p", { "data-field": "in-force" },
    "In force for this service: fixed rate " + fmtPercent(ans.fixed_rate) + ", reservoir " + fmtRate(ans.reservoir) + " traces/s for the fleet" +
    (ans.budget_names && ans.budget_names.length ? "; counted by budgets " + ans.budget_names.join(", ") : "; no budget counts it") + "."));
  const skipped = ans.skipped_rules || [];
  if (skipped.length) {
    const rows = skipped.map((m) => el("tr", { "data-rule": m.rule_name },
      el("td", { "class": "num" }, m.position),
      el("td", {}, m.rule_name),
      el("td", {}, m.field),
      el("td", {}, m.pattern),
      el("td", {}, m.absent ? "(absent)" : m.value)));
    nodes.push(el("table", { id: "explain-skipped" },
      el("caption", {}, "Rules tried before it, and the first condition each failed" + (ans.more_skipped_rules > 0 ? " (" + ans.more_skipped_rules + " more not listed)" : "") + "."),
      el("thead", {}, el("tr", {},
        el("th", { scope: "col", "class": "num" }, "#"),
        el("th", { scope: "col" }, "Rule"),
        el("th", { scope: "col" }, "Field"),
        el("th", { scope: "col" }, "Rule's pattern"),
        el("th", { scope: "col" }, "Request's value"))),
      el("tbody", {}, ...rows)));
  } else {
    nodes.push(el("p", {}, "It is the first rule tried."));
  }
  out.replaceChildren(...nodes);
}

async function onExplain(ev) {
  ev.preventDefault();
  const form = ev.target;
  showError("explain-error", null);
  try {
    const req = explainRequest(form);
    const ans = await getJSON("api/explain", { method: "POST", body: JSON.stringify(req), headers: { "Content-Type": "application/json" } });
    renderExplain(ans);
  } catch (e) {
    let msg = e.message;
    if (e.violations && e.violations.length) msg = e.violations.map((v) => v.field + ": " + v.description).join("; ");
    showError("explain-error", new Error(msg));
    document.getElementById("explain-result").replaceChildren();
  }
}

document.getElementById("explain-form").addEventListener("submit", onExplain);
refresh();
setInterval(refresh, REFRESH_MS);
