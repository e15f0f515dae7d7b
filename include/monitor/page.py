"""The monitor page: one self-contained HTML document (no CDN, no build step).

It polls ``status`` (relative to the page, so it works under any api-server base URL and inside
the Airflow UI's iframe, where the UI's session cookie authenticates the request) every 15 s and
renders the answer with ``textContent`` only: nothing from the server is ever parsed as HTML.
"""

from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dunning monitor</title>
<style>
  body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; color: #1a202c; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  h2 { font-size: 15px; margin: 20px 0 6px; }
  .muted { color: #718096; }
  .cards { display: flex; flex-wrap: wrap; gap: 8px; }
  .card { border: 1px solid #e2e8f0; border-radius: 6px; padding: 8px 12px; min-width: 120px; }
  .card b { display: block; font-size: 22px; }
  table { border-collapse: collapse; min-width: 50%; }
  th, td { border-bottom: 1px solid #e2e8f0; padding: 4px 10px; text-align: left; }
  th { background: #f7fafc; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .state-up, .state-reachable { color: #276749; font-weight: 600; }
  .state-down { color: #c53030; font-weight: 600; }
  .state-locked { color: #b7791f; font-weight: 600; }
  .state-unknown { color: #718096; font-weight: 600; }
  .error { color: #c53030; }
  @media (prefers-color-scheme: dark) {
    body { background: #1a202c; color: #e2e8f0; }
    th { background: #2d3748; }
    .card, th, td { border-color: #4a5568; }
  }
</style>
</head>
<body>
<h1>Dunning monitor</h1>
<div class="muted" id="meta">Loading&hellip;</div>
<div class="error" id="problems"></div>
<h2>Contact ledger</h2>
<div class="cards" id="ledger"></div>
<h2>Gateways (SMPP)</h2>
<div id="gateways"></div>
<h2>Modems</h2>
<div id="modems"></div>
<h2>Scheduled runs</h2>
<div id="scheduled"></div>
<h2>Recent runs</h2>
<div id="runs"></div>
<script>
"use strict";
const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const STATUS_URL = base + "status";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function table(columns, rows, empty) {
  if (!rows || rows.length === 0) return el("div", empty, "muted");
  const t = el("table");
  const head = el("tr");
  columns.forEach(c => head.appendChild(el("th", c.label)));
  t.appendChild(el("thead")).appendChild(head);
  const body = el("tbody");
  rows.forEach(r => {
    const tr = el("tr");
    columns.forEach(c => {
      const v = r[c.key];
      const cls = c.state ? "state-" + v : (typeof v === "number" ? "num" : "");
      const td = el("td", v === null || v === undefined ? "\\u2013" : v, cls);
      if (c.link && v !== null && v !== undefined) {
        const a = el("a", v);
        a.href = c.link(r);
        a.target = "_blank";
        a.title = "Run report";
        td.replaceChildren(a);
      }
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  t.appendChild(body);
  return t;
}

function put(id, node) {
  const target = document.getElementById(id);
  target.replaceChildren(node);
}

function render(s) {
  document.getElementById("meta").textContent =
    "Day " + s.local_day + " (Asia/Shanghai) \\u00b7 updated " + s.generated_at;
  const problems = [].concat(s.config.problems || [], s.store_error || [], s.scheduled_error || []);
  document.getElementById("problems").textContent = problems.join(" \\u00b7 ");
  const cards = el("div", null, "cards");
  const l = s.ledger;
  if (l) {
    [["Queued", l.queued], ["Planned", l.planned], ["Claimed", l.claimed],
     ["Submitted today", l.submitted_today], ["Delivered today", l.delivered_today],
     ["Failed today", l.failed_today], ["Undelivered today", l.undelivered_today],
     ["Receipts outstanding", l.receipts_outstanding]].forEach(([label, value]) => {
      const card = el("div", null, "card");
      card.appendChild(el("b", value));
      card.appendChild(el("span", label, "muted"));
      cards.appendChild(card);
    });
  } else {
    cards.appendChild(el("div", "store not readable", "error"));
  }
  put("ledger", cards);
  put("gateways", table([
    {key: "conn_id", label: "Gateway"}, {key: "state", label: "State", state: true},
    {key: "address", label: "Address"}, {key: "rate_per_minute", label: "Parts/min (5 min)"},
    {key: "submitted_today", label: "Parts today"}, {key: "quota", label: "Quota"},
    {key: "remaining", label: "Remaining"}, {key: "receipts_outstanding", label: "Receipts outstanding"},
    {key: "detail", label: "Detail"}], s.gateways, "No gateway configured."));
  put("modems", table([
    {key: "conn_id", label: "Modem"}, {key: "state", label: "State", state: true},
    {key: "port", label: "Port"}, {key: "detail", label: "Detail"}], s.modems, "No modem configured."));
  put("scheduled", table([
    {key: "dag_id", label: "DAG"}, {key: "paused", label: "Paused"}, {key: "schedule", label: "Schedule"},
    {key: "next_logical_date", label: "Next logical date"}, {key: "next_run_after", label: "Runs after"}],
    s.scheduled, s.scheduled === null ? "Not available." : "No dunning DAG scheduled."));
  put("runs", table([
    {key: "dag_id", label: "DAG"},
    {key: "run_id", label: "Run (report)",
     link: r => "reports/" + encodeURIComponent(r.dag_id) + "/" + encodeURIComponent(r.run_id)},
    {key: "as_of", label: "As of"},
    {key: "planned", label: "Planned"}, {key: "submitted", label: "Submitted"},
    {key: "delivered", label: "Delivered"}, {key: "failed", label: "Failed"},
    {key: "pending", label: "Pending"}, {key: "finished_at", label: "Finished"}],
    s.recent_runs, "No run recorded yet."));
}

async function refresh() {
  try {
    const response = await fetch(STATUS_URL, {credentials: "same-origin", cache: "no-store"});
    if (!response.ok) throw new Error("status: HTTP " + response.status);
    render(await response.json());
  } catch (err) {
    document.getElementById("meta").textContent = "Could not load " + STATUS_URL + ": " + err.message;
  }
}

refresh();
setInterval(refresh, 15000);
</script>
</body>
</html>
"""
