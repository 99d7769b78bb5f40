// Kestrel's device page: camera cards fed by /api/cameras, then kept current by the
// server-sent events of /api/live (hello, state, event, status, stats). No framework, no build.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const cards = new Map(); // camera name -> {root, info}
const MAX_EVENTS = 20;

function url(path) {
  const u = new URL(path, document.baseURI);
  if (token) u.searchParams.set("token", token);
  return u.toString();
}

async function getJSON(path) {
  const response = await fetch(url(path), { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function showProblem(text) {
  const box = document.getElementById("problem");
  box.hidden = !text;
  box.textContent = text || "";
}

function pathText(hierarchy) {
  return (hierarchy || []).map((x) => x.label).join(" › ");
}

function buildCard(info) {
  const root = document.getElementById("camera-template").content.firstElementChild.cloneNode(true);
  root.id = `camera-${info.name}`;
  root.querySelector(".camera-name").textContent = info.name;
  const img = root.querySelector(".stream");
  img.id = `stream-${info.name}`;
  img.src = url(info.stream);
  img.addEventListener("error", () => setTimeout(() => { img.src = url(info.stream); }, 2000));
  root.querySelector(".label").id = `label-${info.name}`;
  document.getElementById("cameras").append(root);
  const card = { root, info };
  cards.set(info.name, card);
  showModel(card);
  return card;
}

function showModel(card, live) {
  const main = card.info.models[0];
  const model = live || main;
  card.root.querySelector(".model-summary").textContent =
    `model ${model.name} (${main.task}, ${main.labels.length} labels)`;
  const dl = card.root.querySelector(".model-details");
  dl.replaceChildren();
  for (const stage of card.info.models) {
    const current = stage === main && live ? live : stage;
    const rows = [["stage", stage.stage], ["name", current.name], ["sha256", current.sha256],
      ["task", stage.task]];
    for (const [key, value] of rows) dl.append(el("dt", key), el("dd", value));
    dl.append(el("dt", "labels"), el("dd", stage.labels.join(", "), "labels"));
  }
}

function showState(camera, state) {
  const card = cards.get(camera);
  if (!card) return;
  const label = card.root.querySelector(".label");
  const labels = state.labels || [];
  label.textContent = labels.length ? labels.map((x) => x.label).join(", ") : "nothing";
  label.classList.toggle("empty", !labels.length);
  label.dataset.frame = state.frame_id ?? "";
  card.root.querySelector(".score").textContent =
    labels.map((x) => `${x.label} ${x.score.toFixed(2)}`).join(" · ");
  card.root.querySelector(".hierarchy").textContent = pathText(state.hierarchy);
  const levels = card.root.querySelector(".levels");
  levels.replaceChildren();
  for (const [name, level] of Object.entries(state.levels || {})) {
    const text = level.labels.map((x) => `${x.label} ${x.score.toFixed(2)}`).join(", ") || "-";
    levels.append(el("li", `${name}: ${text}`));
  }
  const main = card.info.models[0];
  if (state.model && state.model.sha256 !== main.sha256) {
    refreshCameras(); // a new model went live: its labels come from /api/cameras
  }
  showModel(card, state.model);
}

function showStatus(camera, status) {
  const card = cards.get(camera);
  if (!card) return;
  const source = card.root.querySelector(".source");
  source.textContent = `source ${status.state}${status.reason ? ": " + status.reason : ""}`;
  source.classList.toggle("bad", status.state !== "streaming");
}

function showStats(stats) {
  document.getElementById("accelerator").textContent =
    `${stats.accelerator} via ${stats.runtime}${stats.accelerator_reason ? " (" + stats.accelerator_reason + ")" : ""}`;
  document.getElementById("uptime").textContent = `up ${Math.round(stats.uptime_s)} s`;
  for (const [camera, figures] of Object.entries(stats.cameras || {})) {
    const card = cards.get(camera);
    if (!card) continue;
    const body = card.root.querySelector(".timings tbody");
    body.replaceChildren();
    const rows = Object.entries(figures.stage_ms || {});
    rows.push(["capture fps", figures.capture_fps], ["dropped frames", figures.dropped]);
    for (const [name, value] of rows) {
      const tr = el("tr");
      const shown = Number.isInteger(value) ? String(value) : Number(value).toFixed(2);
      tr.append(el("td", name), el("td", shown, "ms"));
      body.append(tr);
    }
  }
}

function addEvent(record, atEnd) {
  const list = document.getElementById("events");
  const item = el("li");
  item.dataset.id = record.id;
  if (record.snapshot) {
    const img = el("img");
    img.loading = "lazy";
    img.alt = `snapshot of event ${record.id}`;
    img.src = url(record.snapshot);
    item.append(img);
  }
  const event = record.event;
  const labels = (event.labels || []).map((x) => `${x.label} ${x.score.toFixed(2)}`).join(", ");
  const text = el("div");
  text.append(
    el("div", `${record.camera}: ${event.type}${event.level && event.level !== "main" ? " (" + event.level + ")" : ""} ${labels || "-"}`, "what"),
    el("div", `${event.timestamp || ""} ${pathText(event.hierarchy)}`, "when"),
  );
  item.append(text);
  if (atEnd) list.append(item); else list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

async function refreshCameras() {
  const data = await getJSON("api/cameras");
  for (const info of data.cameras) {
    const card = cards.get(info.name);
    if (card) { card.info = info; showModel(card); } else buildCard(info);
  }
  return data;
}

function listen() {
  const source = new EventSource(url("api/live"));
  const badge = document.getElementById("connection");
  const on = (kind, handler) => source.addEventListener(kind, (e) => handler(JSON.parse(e.data)));
  source.onopen = () => { badge.textContent = "live"; badge.className = "badge on"; showProblem(""); };
  source.onerror = () => { badge.textContent = "reconnecting…"; badge.className = "badge off"; };
  on("hello", (data) => {
    for (const [camera, state] of Object.entries(data.states)) showState(camera, state);
    for (const [camera, status] of Object.entries(data.statuses)) showStatus(camera, status);
    document.getElementById("events").replaceChildren();
    for (const record of data.events) addEvent(record, true);
  });
  on("state", (m) => showState(m.camera, m.data));
  on("status", (m) => showStatus(m.camera, m.data));
  on("event", (m) => addEvent(m.data, false));
  on("stats", showStats);
}

async function main() {
  try {
    const data = await refreshCameras();
    document.getElementById("device").textContent = data.device;
    document.title = `Kestrel ${data.device}`;
    listen();
  } catch (err) {
    showProblem(`${err.message}${token ? "" : " (does this device need ?token=…?)"}`);
  }
}

main();
