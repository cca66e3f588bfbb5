// The inbox, run and docs pages: data from the service's own API with the signed-in bearer token
// (kept in this tab's sessionStorage), live progress from the run's server-sent events.
"use strict";
const KEY = "ensemble-token";
const page = document.body.dataset.page;
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function token() { return sessionStorage.getItem(KEY); }

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers = Object.assign({ Authorization: "Bearer " + token() }, opts.headers);
  if (opts.json !== undefined) { opts.body = JSON.stringify(opts.json); opts.headers["Content-Type"] = "application/json"; }
  const response = await fetch(path, opts);
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error((body && body.error && body.error.message) || ("HTTP " + response.status));
  return body;
}

function say(text, cls) { const s = $("#status"); if (s) { s.textContent = text; s.className = cls || ""; } }

// ---------------------------------------------------------------- live events (SSE over fetch, with the token)

async function follow(runId, onEvent) {
  let last = null;
  for (let tries = 0; tries < 50; tries++) {
    try {
      const headers = { Authorization: "Bearer " + token(), Accept: "text/event-stream" };
      if (last) headers["Last-Event-ID"] = last;
      const response = await fetch("/api/runs/" + encodeURIComponent(runId) + "/events", { headers });
      if (!response.ok) return;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          let id = null, kind = "message", data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("event: ")) kind = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!data) continue;
          if (id) last = id;
          const parsed = JSON.parse(data);
          onEvent(kind, parsed);
          if (kind === "run_ended") return;
        }
      }
    } catch (err) { /* reconnect below, resuming after the last event id */ }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function describe(kind, d) {
  switch (kind) {
    case "step_started": return `${d.step} started (${d.agent})`;
    case "step_retried": return `${d.step} attempt ${d.attempt}`;
    case "step_finished": return `${d.step} ${d.status}` + (d.error ? `: ${d.error}` : "");
    case "tokens": return `${d.step} used ${d.total_tokens} tokens`;
    case "gate_opened": case "gate_escalated": case "gate_decided": return `gate ${d.gate} ${kind.slice(5)} (tier ${d.tier})` + (d.status && d.status !== "open" ? `: ${d.status}` : "");
    case "decision": return `${d.by} ${d.decision} at ${d.gate}` + (d.accepted ? "" : ` (refused: ${d.refused})`);
    case "run_ended": return `run ${d.status}` + (d.error ? `: ${d.error}` : "");
    default: return kind;
  }
}

// ---------------------------------------------------------------- deciding

function decisionForm(runId, gate, onDone) {
  const comment = el("textarea", { placeholder: "comment (needed to request changes)", "aria-label": "comment" });
  const out = el("p", { class: "result", role: "status" });
  const send = (decision) => async () => {
    out.textContent = "sending…"; out.className = "result";
    try {
      const r = await api(`/api/runs/${encodeURIComponent(runId)}/gates/${encodeURIComponent(gate)}/decision`,
        { method: "POST", json: { decision, comment: comment.value } });
      out.textContent = `Recorded: ${decision.replace("_", " ")} (gate ${r.status}, ${r.approvals} of ${r.quorum})`;
      out.className = "result ok";
      if (onDone) onDone(r);
    } catch (err) { out.textContent = "Refused: " + err.message; out.className = "result error"; }
  };
  return el("div", { class: "decide" }, comment,
    el("button", { type: "button", class: "approve", onclick: send("approve") }, "Approve"), " ",
    el("button", { type: "button", class: "reject", onclick: send("reject") }, "Reject"), " ",
    el("button", { type: "button", class: "request-changes", onclick: send("request_changes") }, "Request changes"), out);
}

function stepsList(view) {
  return el("ul", { class: "steps" }, ...view.steps.map((s) => el("li", {}, `${s.name} (${s.agent}): `, el("span", { class: "status-" + s.status }, s.status))));
}

// ---------------------------------------------------------------- pages

async function renderInbox() {
  const box = $("#gates"); box.textContent = "";
  const rows = await api("/api/approvals");
  say(rows.length ? `${rows.length} gate(s) waiting on you.` : "Nothing waits on you.");
  for (const row of rows) {
    const card = el("article", { class: "card gate", "data-run": row.run_id, "data-gate": row.gate });
    card.append(el("h2", {}, `${row.flow || ""} · gate ${row.gate} · `, el("a", { href: `/ui/runs/${encodeURIComponent(row.run_id)}?gate=${encodeURIComponent(row.gate)}` }, row.run_id)));
    card.append(el("p", { class: "meta" }, `tier ${row.tier} · approvers ${(row.approvers || []).join(", ")} · ${row.approvals || 0} of ${row.quorum} · opened ${row.opened_at || "?"} · deadline ${row.deadline || "none"}`));
    box.append(card);
    try {
      const [gate, view] = await Promise.all([api(`/api/runs/${encodeURIComponent(row.run_id)}/gates/${encodeURIComponent(row.gate)}`), api(`/api/runs/${encodeURIComponent(row.run_id)}`)]);
      card.append(el("h3", {}, "What you are asked to decide"), el("pre", { class: "show" }, JSON.stringify(gate.show, null, 2)));
      card.append(el("h3", {}, "Steps so far"), stepsList(view));
    } catch (err) { card.append(el("p", { class: "error" }, err.message)); }
    const live = el("ol", { class: "live" });
    const runState = el("p", { class: "run-state", role: "status" });
    card.append(decisionForm(row.run_id, row.gate, () => follow(row.run_id, (kind, d) => {
      live.append(el("li", {}, describe(kind, d)));
      if (kind === "run_ended") { runState.textContent = "Run " + d.status; runState.className = "run-state status-" + d.status; }
    })), runState, live);
  }
}

async function renderRun() {
  const runId = document.body.dataset.run, gateName = document.body.dataset.gate;
  const refresh = async () => {
    const view = await api(`/api/runs/${encodeURIComponent(runId)}`);
    say(`${view.flow} · ${view.status}` + (view.error ? `: ${view.error}` : ""), "status-" + view.status);
    const body = $("#steps tbody"); body.textContent = "";
    for (const s of view.steps) body.append(el("tr", {}, el("td", {}, s.name), el("td", {}, s.agent), el("td", { class: "status-" + s.status }, s.status),
      el("td", {}, s.attempts), el("td", {}, s.latency_ms === null ? "" : Math.round(s.latency_ms) + " ms"), el("td", {}, s.summary || s.error || "")));
    const svg = await api(`/api/runs/${encodeURIComponent(runId)}/timeline.svg`);
    $("#timeline").innerHTML = svg;  // rendered and escaped by the service
    const audit = await api(`/api/runs/${encodeURIComponent(runId)}/decisions`);
    const dec = $("#decisions tbody"); dec.textContent = "";
    for (const d of audit.decisions) dec.append(el("tr", {}, el("td", {}, d.gate), el("td", {}, d.decision), el("td", {}, d.by), el("td", {}, d.at || ""),
      el("td", { class: d.verified ? "ok" : "error" }, d.verified ? `verified (${d.key_id || d.subject})` : (d.identity === "asserted" ? "asserted" : "NOT verified: " + (d.problem || "")))));
    return view;
  };
  const view = await refresh();
  const gateBox = $("#gate"); gateBox.textContent = "";
  const open = view.pending_approvals.find((g) => g.gate === gateName || g.path === gateName) || (gateName ? null : view.pending_approvals[0]);
  if (open) {
    try {
      const gate = await api(`/api/runs/${encodeURIComponent(runId)}/gates/${encodeURIComponent(open.gate)}`);
      gateBox.append(el("div", { class: "card" }, el("h2", {}, `Gate ${gate.gate} (tier ${gate.tier}, deadline ${gate.deadline || "none"})`),
        el("pre", { class: "show" }, JSON.stringify(gate.show, null, 2)), decisionForm(runId, gate.gate)));
    } catch (err) { gateBox.append(el("p", { class: "error" }, err.message)); }
  }
  const ended = ["completed", "failed", "canceled", "terminated", "timed_out"].includes(view.status);
  follow(runId, (kind, d) => {
    $("#events").append(el("li", {}, describe(kind, d)));
    if (!ended && ["step_finished", "decision", "run_ended", "gate_opened"].includes(kind)) refresh().catch(() => {});
  });
}

async function renderDocs() {
  const doc = await (await fetch("/openapi.json")).json();
  const box = $("#api");
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const params = (op.parameters || []).map((p) => `${p.name} (${p.in}${p.required ? ", required" : ""})`).join(", ");
      const ref = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
      box.append(el("div", { class: "card" }, el("h2", {}, `${method.toUpperCase()} ${path}`), el("p", {}, op.summary || ""),
        params ? el("p", { class: "meta" }, "parameters: " + params) : null,
        ref ? el("p", { class: "meta" }, "body: " + JSON.stringify(ref.schema)) : null,
        el("p", { class: "meta" }, "answers: " + Object.keys(op.responses || {}).join(", "))));
    }
  }
  say("");
}

async function render() {
  const signedIn = !!token();
  $("#signin").hidden = signedIn; $("#signout").hidden = !signedIn;
  if (page === "docs") return renderDocs();
  if (!signedIn) { $("#who").textContent = ""; return; }
  try {
    const me = await api("/api/whoami");
    $("#who").textContent = "Signed in as " + me.subject;
  } catch (err) { sessionStorage.removeItem(KEY); $("#signin").hidden = false; $("#signout").hidden = true; say(err.message, "error"); return; }
  try { if (page === "inbox") await renderInbox(); else if (page === "run") await renderRun(); }
  catch (err) { say(err.message, "error"); }
}

$("#signin").addEventListener("submit", (ev) => { ev.preventDefault(); sessionStorage.setItem(KEY, $("#token").value.trim()); $("#token").value = ""; render(); });
$("#signout").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.reload(); });
render();
