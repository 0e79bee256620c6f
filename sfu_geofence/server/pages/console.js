// The operator console: the operator API (/api, bearer token) made visible. Plain JavaScript.
"use strict";

const TOKEN_KEY = "sfu-geofence-operator-token";
const ROOMS_EVERY_MS = 1500;
const DATABASE_EVERY_MS = 5000;
const AUDIT_EVERY_MS = 1000;
const AUDIT_KEEP = 300;
const DEFAULT = Symbol("default policy");

const $ = (id) => document.getElementById(id);

let selected = null; // a room name, DEFAULT, or null
let auditAfter = null; // id of the newest audit event shown
let timers = [];

class Locked extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ message: `${response.status} ${response.statusText}` }));
  if (response.status === 401 || response.status === 403) {
    lock(data.message || "the token was refused");
    throw new Locked(data.message);
  }
  if (!response.ok) throw new Error(data.message || `${response.status} ${response.statusText}`);
  return data;
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function pill(text) {
  return element("span", text, `pill ${String(text).replace(/[^a-z_]/gi, "")}`);
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell ?? "";
    tr.append(td);
  }
  return tr;
}

/** "deny CN, RU" (+ monitor, + default) for the rooms table; the whole rule is the row's tooltip. */
function summary(room) {
  const p = room.policy;
  const span = element("span", `${p.mode} ${p.countries.join(", ") || "(none)"}`);
  if (p.enforcement === "monitor") span.append(" ", pill("monitor"));
  if (room.inherited) span.append(" ", element("span", "(default)", "hint"));
  return span;
}

function showError(message) {
  $("console-error").hidden = !message;
  $("console-error").textContent = message || "";
}

function status(text) {
  $("status").textContent = text;
}

// -- locking -----------------------------------------------------------------------------------------

function lock(message) {
  for (const timer of timers) clearInterval(timer);
  timers = [];
  sessionStorage.removeItem(TOKEN_KEY);
  document.body.dataset.state = "locked";
  $("console").hidden = true;
  $("forget-token").hidden = true;
  $("unlock").hidden = false;
  $("unlock-error").hidden = !message;
  $("unlock-error").textContent = message || "";
}

async function unlock() {
  try {
    const database = await api("GET", "/database");
    showDatabase(database);
  } catch (error) {
    if (!(error instanceof Locked)) lock(error.message);
    return;
  }
  document.body.dataset.state = "open";
  $("unlock").hidden = true;
  $("console").hidden = false;
  $("forget-token").hidden = false;
  auditAfter = null;
  $("audit").tBodies[0].replaceChildren();
  await Promise.all([refreshRooms(), refreshAudit()]);
  timers.push(setInterval(refreshRooms, ROOMS_EVERY_MS));
  timers.push(setInterval(refreshDatabase, DATABASE_EVERY_MS));
  timers.push(setInterval(refreshAudit, AUDIT_EVERY_MS));
}

/** The build and its age, never the file's path (the console may be on a shared screen). */
function showDatabase(database) {
  const days = Math.floor(database.age_seconds / 86400);
  const age = days === 0 ? "less than a day old" : `${days} day${days === 1 ? "" : "s"} old`;
  $("database").textContent =
    `${database.label}${database.embedded ? " (embedded)" : ""} · built ${database.built.slice(0, 10)} · ${age}`;
  $("database").title = database.attribution || "";
  $("database-warning").hidden = !database.warning;
  $("database-warning").textContent = database.warning || "";
  const alarm = database.alarm;
  $("database-alarm").hidden = !alarm;
  $("database-alarm").textContent = alarm
    ? `The last database reload failed (${new Date(alarm.since).toLocaleString()}): ` +
      `${database.label} still decides. The server log and GET /api/database say why.`
    : "";
}

async function refreshDatabase() {
  try {
    showDatabase(await api("GET", "/database"));
  } catch (error) {
    if (!(error instanceof Locked)) showError(error.message);
  }
}

// -- rooms and participants ----------------------------------------------------------------------------

async function refreshRooms() {
  try {
    const { rooms } = await api("GET", "/rooms");
    const body = $("rooms").tBodies[0];
    body.replaceChildren(
      ...rooms.map((room) => {
        const tr = row([room.room, room.participants, summary(room)]);
        tr.title = room.rule;
        tr.className = "selectable";
        tr.dataset.room = room.room;
        if (room.room === selected) tr.classList.add("selected");
        tr.addEventListener("click", () => select(room.room));
        return tr;
      }),
    );
    $("no-rooms").hidden = rooms.length > 0;
    if (typeof selected === "string") await refreshParticipants();
    showError("");
    status(`updated ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (!(error instanceof Locked)) showError(error.message);
  }
}

async function refreshParticipants() {
  const room = selected;
  let participants = [];
  try {
    ({ participants } = await api("GET", `/rooms/${encodeURIComponent(room)}/participants`));
  } catch (error) {
    if (error instanceof Locked || !/no participants and no policy/.test(error.message)) throw error;
  }
  if (room !== selected) return;
  const body = $("participants").tBodies[0];
  body.replaceChildren(
    ...participants.map((p) => {
      const eject = element("button", p.ejecting ? "Ejecting…" : "Eject", "small danger eject");
      eject.disabled = p.ejecting;
      eject.addEventListener("click", () => ejectParticipant(room, p));
      const how = decided(p);
      const tr = row([
        p.name ?? p.participant,
        p.country ?? "unknown",
        element("span", p.address, "mono"),
        how,
        media(p.media),
        pill(p.outcome),
        eject,
      ]);
      ["name", "country", "address", "how", "media", "outcome", "action"].forEach((name, i) => {
        tr.cells[i].className = name;
      });
      tr.dataset.participant = p.participant;
      tr.dataset.name = p.name ?? "";
      if (p.node) {
        // A cluster: which node hosts this participant (its ejection goes there).
        tr.dataset.node = p.node;
        tr.cells[0].append(element("span", ` · ${p.node}`, "mono node"));
      }
      return tr;
    }),
  );
  $("no-participants").hidden = participants.length > 0;
}

/** Where the participant's media really comes from (the selected ICE pair), and that address's country.
 * In the demo every tab's media comes from 127.0.0.1: whatever origin it pretends, that is "unknown". */
function media(m) {
  if (!m) return element("span", "not connected yet", "hint");
  const span = element("span", m.address, "mono");
  span.append(" ", element("span", `${m.country ?? "unknown"}${m.relayed ? ", relayed" : ""}`, "hint"));
  if (m.outcome && m.outcome !== "admitted") span.append(" ", pill(m.outcome));
  span.title = m.reason ? `${m.reason} (${m.source || "not in database"}, ${m.database})` : "";
  return span;
}

/** How the country was decided: the reason, then the database field and build; the rule on hover. */
function decided(d) {
  const span = element("span");
  span.append(element("span", d.reason, "reason"), element("span", `${d.source || "not in database"} · ${d.database}`, "source hint"));
  span.title = `rule: ${d.rule} (policy version ${d.policy_version})`;
  return span;
}

async function ejectParticipant(room, participant) {
  try {
    await api("POST", `/rooms/${encodeURIComponent(room)}/participants/${encodeURIComponent(participant.participant)}/eject`, {
      reason: "ejected by an operator from the console",
    });
    $("policy-result").textContent = `Ejecting ${participant.name || participant.participant}.`;
    await refreshRooms();
  } catch (error) {
    if (!(error instanceof Locked)) showError(error.message);
  }
}

async function select(room) {
  selected = room;
  for (const tr of $("rooms").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.room === room);
  const isDefault = room === DEFAULT;
  $("selected-title").textContent = isDefault ? "Server default" : `Room ${room}`;
  $("room-panel").hidden = isDefault;
  $("policy-delete").hidden = isDefault;
  $("policy-title").textContent = isDefault ? "Default policy (rooms without their own)" : "Room policy";
  $("policy-result").textContent = "";
  try {
    if (!isDefault) await refreshParticipants();
    await loadPolicy();
  } catch (error) {
    if (!(error instanceof Locked)) showError(error.message);
  }
}

// -- policies ------------------------------------------------------------------------------------------

function policyPath() {
  return selected === DEFAULT ? "/policy/default" : `/rooms/${encodeURIComponent(selected)}/policy`;
}

async function loadPolicy() {
  const answer = await api("GET", policyPath());
  fillPolicy(answer);
  $("policy-form").hidden = false;
}

function fillPolicy(answer) {
  const policy = answer.policy;
  $("policy-mode").value = policy.mode;
  $("policy-countries").value = policy.countries.join(", ");
  $("policy-unknown").value = policy.unknown;
  $("policy-enforcement").value = policy.enforcement;
  $("policy-relayed").value = policy.relayed;
  $("policy-exempt-participants").value = policy.exempt_participants.join("\n");
  $("policy-exempt-networks").value = policy.exempt_networks.join("\n");
  const where = answer.inherited ? "follows the server default" : "has its own policy";
  $("policy-state").textContent =
    selected === DEFAULT ? `Version ${answer.version}: ${answer.rule}` : `This room ${where} (version ${answer.version}): ${answer.rule}`;
}

function lines(text, separators) {
  return text.split(separators).map((s) => s.trim()).filter(Boolean);
}

function readPolicy() {
  return {
    mode: $("policy-mode").value,
    countries: lines($("policy-countries").value, /[\s,;]+/).map((c) => c.toUpperCase()),
    unknown: $("policy-unknown").value,
    enforcement: $("policy-enforcement").value,
    relayed: $("policy-relayed").value,
    exempt_participants: lines($("policy-exempt-participants").value, /\n+/),
    exempt_networks: lines($("policy-exempt-networks").value, /[\s,;]+/),
  };
}

function describeEjections(ejections) {
  if (!ejections || !ejections.length) return "Nobody had to leave.";
  const words = ejections.map((e) => `${nameOf(e.participant)} (${e.country ?? "unknown"}): ${e.outcome}`);
  return `Ejections: ${words.join("; ")}.`;
}

/** A participant's display name, as the participants table shows it, else its id. */
function nameOf(participant) {
  const tr = [...$("participants").tBodies[0].rows].find((r) => r.dataset.participant === participant);
  return tr?.dataset.name || participant;
}

async function savePolicy() {
  try {
    const answer = await api("PUT", policyPath(), readPolicy());
    fillPolicy(answer);
    $("policy-result").textContent = `Applied (version ${answer.version}). ${describeEjections(answer.ejections)}`;
    showError("");
    await refreshRooms();
  } catch (error) {
    if (!(error instanceof Locked)) $("policy-result").textContent = `Not applied: ${error.message}`;
  }
}

async function deletePolicy() {
  try {
    const answer = await api("DELETE", policyPath());
    fillPolicy(answer);
    $("policy-result").textContent = `The room follows the default again. ${describeEjections(answer.ejections)}`;
    await refreshRooms();
  } catch (error) {
    if (!(error instanceof Locked)) $("policy-result").textContent = `Not changed: ${error.message}`;
  }
}

// -- audit ---------------------------------------------------------------------------------------------

async function refreshAudit() {
  try {
    for (;;) {
      const query = auditAfter === null ? "" : `?after_id=${auditAfter}`;
      const page = await api("GET", `/audit${query}`);
      addAudit(page.events);
      auditAfter = page.last_id ?? auditAfter ?? 0;
      if (!page.more || auditAfter === null || query === "") break;
    }
  } catch (error) {
    if (!(error instanceof Locked)) showError(error.message);
  }
}

/** Why an event happened, and who made a change; a database event names the build, never a file. */
function why(e) {
  const text =
    e.kind !== "database"
      ? e.reason ?? e.detail
      : e.outcome === "loaded"
        ? e.database
        : "the new file could not be used: the previous build still decides";
  return e.actor ? `${text ?? ""} (by ${e.actor})` : text;
}

function addAudit(events) {
  const body = $("audit").tBodies[0];
  for (const e of events) {
    const time = e.time ? new Date(e.time).toLocaleTimeString() : "";
    const tr = row([
      e.id,
      time,
      e.kind,
      pill(e.outcome),
      e.room,
      e.participant,
      element("span", e.address, "mono"),
      e.country,
      why(e),
      e.rule,
    ]);
    for (const cell of [tr.cells[8], tr.cells[9]]) {
      cell.className = "clip";
      cell.title = cell.textContent;
    }
    tr.dataset.kind = e.kind;
    tr.dataset.outcome = e.outcome;
    body.prepend(tr); // newest first
  }
  while (body.rows.length > AUDIT_KEEP) body.deleteRow(-1);
}

// -- start ---------------------------------------------------------------------------------------------

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  unlock();
});
$("forget-token").addEventListener("click", () => lock("Token forgotten."));
$("open-room").addEventListener("submit", (event) => {
  event.preventDefault();
  select($("open-room-name").value.trim());
});
$("edit-default").addEventListener("click", (event) => {
  event.preventDefault();
  select(DEFAULT);
});
$("policy-form").addEventListener("submit", (event) => {
  event.preventDefault();
  savePolicy();
});
$("policy-delete").addEventListener("click", () => deletePolicy());

// `sfu-geofence demo` prints a console link carrying the token in the fragment (never sent to the server).
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
  history.replaceState(null, "", location.pathname + location.search);
}
if (token()) unlock();
else lock();
