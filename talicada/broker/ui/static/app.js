// Talicada dashboard: live updates and actions. Plain JavaScript, no build step,
// no dependencies. Everything goes through the broker's public API, so the page
// can do nothing a client cannot.
"use strict";

const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "REJECTED", "EXPIRED"]);
const JSON_HEADERS = { "Content-Type": "application/json", Accept: "application/json" };

// -- shared -------------------------------------------------------------------

function showMessages(title, messages) {
  const banner = document.getElementById("banner");
  banner.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = title;
  banner.append(strong);
  const list = document.createElement("ul");
  for (const item of messages || []) {
    const li = document.createElement("li");
    li.textContent = item.message || item.kind;
    list.append(li);
  }
  banner.append(list);
  banner.hidden = false;
  banner.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

async function answer(response) {
  let body = {};
  try { body = await response.json(); } catch (_) { /* not JSON: keep {} */ }
  return body;
}

function setPhase(element, phase) {
  if (!element) return;
  element.textContent = phase;
  element.className = element.className.replace(/phase-[A-Z]+/, "phase-" + phase);
}

// Accept, reject and cancel buttons: one update document each (README "The API").
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  button.disabled = true;
  const uuid = button.dataset.uuid;
  const update = { kind: "uri:enum-value-update", path: "phase", value: button.dataset.action };
  const response = await fetch(`/sessions/${uuid}`, {
    method: "POST", headers: JSON_HEADERS, body: JSON.stringify(update),
  });
  const body = await answer(response);
  if (!response.ok) {
    button.disabled = false;
    showMessages(`The broker said no (${response.status})`, body.messages);
    return;
  }
  window.location.assign(`/ui/sessions/${uuid}`);
});

// -- the sessions list ----------------------------------------------------------

// One request every two seconds for the whole list, rather than an event stream
// per row: browsers open at most six connections to one origin.
function followList(table) {
  const phase = table.dataset.phase;
  const query = "limit=100" + (phase ? `&phase=${phase}` : "");
  async function refresh() {
    const response = await fetch(`/sessions?${query}`, { headers: JSON_HEADERS });
    if (!response.ok) return;
    const body = await answer(response);
    const rows = new Map([...table.querySelectorAll("tr[data-uuid]")].map((r) => [r.dataset.uuid, r]));
    for (const session of body.sessions || []) {
      const uuid = session.meta ? session.meta.uuid : session.uuid;
      const row = rows.get(uuid);
      if (!row) { window.location.reload(); return; }  // a new session: render it properly
      setPhase(row.querySelector("[data-role=phase]"), session.phase);
    }
  }
  setInterval(refresh, 2000);
}

// -- one session: timeline and live phases ---------------------------------------

function segments(steps, live, now) {
  const out = [];
  steps.forEach((step, i) => {
    const next = steps[i + 1];
    const end = next ? next.time : (live && !FINAL.has(step.to) ? now : step.time);
    out.push({ phase: step.to, start: step.time, end, cause: step.cause });
  });
  return out;
}

function drawTimeline(box, data, zoom) {
  const now = Date.now();
  const live = !FINAL.has(data.phase);
  const history = data.history;
  const mine = history.filter((h) => !h.component);
  const accepted = mine.find((h) => h.to === "ACCEPTED") || mine[0];
  const times = history.map((h) => h.time);
  let start = accepted ? accepted.time : now;
  let end = Math.max(...times, live ? now : 0, start + 1000);
  if (zoom === "plan") {
    for (const block of data.planned) {
      start = Math.min(start, block.start);
      end = Math.max(end, block.end);
    }
  }
  const pad = (end - start) * 0.02;
  start -= pad; end += pad;
  const x = (t) => Math.min(100, Math.max(0, ((t - start) / (end - start)) * 100));

  const rows = [["Planned", data.planned.map((b) => ({ ...b, cause: "booked" })), "planned"]];
  rows.push(["Session", segments(mine, live, now), "session"]);
  for (const part of data.components) {
    const steps = history.filter((h) => h.component === part.uuid);
    rows.push([`${part.role}: ${part.label}`, segments(steps, live, now), "component"]);
  }
  box.replaceChildren();
  for (const [label, parts, kind] of rows) {
    const row = document.createElement("div");
    row.className = `tl-row tl-${kind}`;
    const name = document.createElement("div");
    name.className = "tl-label";
    name.textContent = label;
    name.title = label;
    const track = document.createElement("div");
    track.className = "tl-track";
    for (const part of parts) {
      if (part.end < start || part.start > end) continue;
      const bar = document.createElement("div");
      bar.className = `tl-bar phase-${part.phase}`;
      bar.dataset.phase = part.phase;
      bar.style.left = `${x(part.start)}%`;
      bar.style.width = `max(4px, ${x(part.end) - x(part.start)}%)`;
      const seconds = ((part.end - part.start) / 1000).toFixed(1);
      bar.title = `${part.phase} · ${seconds} s · ${part.cause}`;
      track.append(bar);
    }
    row.append(name, track);
    box.append(row);
  }
  const axis = document.createElement("div");
  axis.className = "tl-row tl-axis";
  const spacer = document.createElement("div");
  spacer.className = "tl-label";
  const ticks = document.createElement("div");
  ticks.className = "tl-track";
  const fine = end - start < 20000;
  for (let i = 0; i <= 4; i++) {
    const t = start + ((end - start) * i) / 4;
    const tick = document.createElement("span");
    tick.className = "tl-tick";
    tick.style.left = `${i * 25}%`;
    const clock = new Date(t).toLocaleTimeString([], { hour12: false });
    tick.textContent = fine ? `${clock}.${String(new Date(t).getMilliseconds()).padStart(3, "0")[0]}` : clock;
    ticks.append(tick);
  }
  axis.append(spacer, ticks);
  box.append(axis);
  box.dataset.sessionPhases = mine.map((h) => h.to).join(" ");
}

function followSession(box) {
  const data = JSON.parse(document.getElementById("timeline-data").textContent);
  let zoom = "actual";
  const draw = () => drawTimeline(box, data, zoom);
  for (const button of document.querySelectorAll("[data-zoom]")) {
    button.addEventListener("click", () => {
      zoom = button.dataset.zoom;
      document.querySelectorAll("[data-zoom]").forEach((b) => b.classList.toggle("on", b === button));
      draw();
    });
  }
  draw();
  if (data.final) return;
  const ticker = setInterval(draw, 500);
  // Every transition, past and future; the broker ends the stream after the last.
  const stream = new EventStream(`/sessions/${data.uuid}/events`, data.history.length - 1);
  stream.onevent = (name, id, text) => {
    if (id < data.history.length) return;  // already rendered by the server
    const item = JSON.parse(text);
    data.history.push({ ...item, time: Date.parse(item.time), component: item.component || "" });
    if (name === "component") {
      const row = document.querySelector(`tr[data-component="${item.component}"]`);
      setPhase(row && row.querySelector("[data-role=phase]"), item.to);
    } else {
      data.phase = item.to;
      setPhase(document.getElementById("phase"), item.to);
      updateActions(data.uuid, item.to);
    }
    draw();
    if (name === "transition" && FINAL.has(item.to)) {
      stream.close();
      clearInterval(ticker);
      // Messages and logs are complete now: show them.
      setTimeout(() => window.location.reload(), 1500);
    }
  };
  stream.open();
}

// The buttons the phase allows: accept or reject an offer, cancel a live session.
function updateActions(uuid, phase) {
  const box = document.querySelector(".actions");
  if (!box || phase === "OFFERED") return;
  box.replaceChildren();
  if (FINAL.has(phase)) return;
  const cancel = document.createElement("button");
  cancel.className = "danger";
  cancel.dataset.action = "CANCELLED";
  cancel.dataset.uuid = uuid;
  cancel.textContent = "Cancel session";
  box.append(cancel);
}

// Server-Sent Events read with fetch rather than EventSource: EventSource always
// sends "Accept: text/event-stream", which the broker's content negotiation
// answers with 406. Resumes after the last id seen when the connection drops.
class EventStream {
  constructor(url, lastId) {
    this.url = url;
    this.lastId = lastId;
    this.closed = false;
    this.onevent = () => {};
  }

  close() {
    this.closed = true;
    if (this.abort) this.abort.abort();
  }

  async open() {
    while (!this.closed) {
      try {
        await this.read();
      } catch (error) {
        if (this.closed) return;
      }
      if (!this.closed) await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  async read() {
    this.abort = new AbortController();
    const headers = { Accept: "application/json" };
    if (this.lastId >= 0) headers["Last-Event-ID"] = String(this.lastId);
    const response = await fetch(this.url, { headers, signal: this.abort.signal });
    if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const fields = {};
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;  // keepalive comments
          const colon = line.indexOf(":");
          const key = line.slice(0, colon);
          fields[key] = (fields[key] || "") + line.slice(colon + 1).replace(/^ /, "");
        }
        if (fields.data === undefined) continue;
        this.lastId = Number(fields.id);
        this.onevent(fields.event || "message", this.lastId, fields.data);
      }
    }
  }
}

// -- submit ---------------------------------------------------------------------

function submitForm(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    const text = form.querySelector("textarea").value;
    // YAML is a superset of JSON: one content type reads both.
    const response = await fetch("/requests", {
      method: "POST",
      headers: { "Content-Type": "application/yaml", Accept: "application/json" },
      body: text,
    });
    const body = await answer(response);
    button.disabled = false;
    if (!response.ok) {
      showMessages(`The request was refused (${response.status})`, body.messages);
      return;
    }
    const uuid = body.meta ? body.meta.uuid : body.uuid;
    window.location.assign(`/ui/offersets/${uuid}`);
  });
}

// -- start ----------------------------------------------------------------------

const page = document.body.dataset.page;
if (page === "sessions" && document.getElementById("sessions")) followList(document.getElementById("sessions"));
if (page === "session") followSession(document.getElementById("timeline"));
if (page === "submit") submitForm(document.getElementById("submit-form"));
