// kestrel label: the page. Plain JavaScript, no build step. The server is the source of
// truth: after every change (ours or another tab's, seen by polling /api/version) the page
// reloads the list from /api/images.
"use strict";

const state = {
  data: null,        // the last /api/images answer
  selected: new Set(),
  order: [],         // paths in display order (for shift-click ranges)
  anchor: null,      // the last path clicked
  mine: [],          // ids of the changes this tab made (what "undo" undoes first)
  busy: 0,          // changes asked for and not finished (polling waits for none)
};

const $ = (id) => document.getElementById(id);

function say(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.className = error ? "error" : "";
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  let payload = {};
  try { payload = await response.json(); } catch (e) { /* not JSON */ }
  return { status: response.status, ok: response.ok, payload };
}

async function reload() {
  const r = await api("/api/images");
  if (!r.ok) { say(r.payload.error || `error ${r.status}`, true); return; }
  state.data = r.payload;
  const present = new Set(state.data.images.map((i) => i.path));
  state.selected = new Set([...state.selected].filter((p) => present.has(p)));
  render();
}

function tile(image) {
  const fig = document.createElement("figure");
  fig.className = "tile" + (state.selected.has(image.path) ? " selected" : "");
  fig.dataset.path = image.path;
  fig.title = image.path + (image.suggested_label ? ` (maybe ${image.suggested_label})` : "");
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = image.path;
  img.src = "/api/thumb?path=" + encodeURIComponent(image.path);
  fig.appendChild(img);
  if (image.flags.length) {
    const flags = document.createElement("div");
    flags.className = "flags";
    for (const f of image.flags) {
      const b = document.createElement("span");
      b.className = "flag";
      b.textContent = f.replace("_", " ");
      flags.appendChild(b);
    }
    fig.appendChild(flags);
  }
  const cap = document.createElement("figcaption");
  const name = image.path.split("/").pop();
  cap.innerHTML = "";
  cap.appendChild(document.createTextNode(name));
  if (image.guess) {
    const g = document.createElement("div");
    g.className = "guess";
    g.textContent = "guess: " + image.guess;
    cap.appendChild(g);
  }
  fig.appendChild(cap);
  return fig;
}

function groupSection(title, images, id) {
  const section = document.createElement("section");
  section.className = "group";
  section.dataset.group = id;
  const h = document.createElement("h2");
  h.appendChild(document.createTextNode(title));
  const all = document.createElement("button");
  all.type = "button";
  all.className = "select-group";
  all.textContent = "select group";
  all.addEventListener("click", () => selectGroup(images.map((i) => i.path)));
  h.appendChild(all);
  section.appendChild(h);
  const grid = document.createElement("div");
  grid.className = "grid";
  for (const image of images) {
    grid.appendChild(tile(image));
    state.order.push(image.path);
  }
  section.appendChild(grid);
  return section;
}

function byGuess(a, b) {
  // Sorted by the model's guess, then most typical first (curate's rank), then by name.
  const ga = a.guess || "\uffff", gb = b.guess || "\uffff";
  if (ga !== gb) return ga < gb ? -1 : 1;
  const ra = a.rank ?? 1e9, rb = b.rank ?? 1e9;
  if (ra !== rb) return ra - rb;
  return a.path < b.path ? -1 : 1;
}

function render() {
  const data = state.data;
  $("root").textContent = data.root;
  state.order = [];
  const main = $("groups");
  main.innerHTML = "";
  const unlabeled = data.images.filter((i) => i.label === null);
  const clusters = new Map();
  for (const image of unlabeled) {
    const key = image.cluster === null || image.cluster === undefined ? "none" : image.cluster;
    if (!clusters.has(key)) clusters.set(key, []);
    clusters.get(key).push(image);
  }
  const info = new Map(data.clusters.map((c) => [c.id, c]));
  const keys = [...clusters.keys()].sort((a, b) => (a === "none") - (b === "none") || a - b);
  for (const key of keys) {
    const images = clusters.get(key).sort(byGuess);
    const c = info.get(key);
    const guess = c && c.guess ? ` · model's guess: ${c.guess}` : "";
    const title = key === "none" ? `Not grouped · ${images.length} images`
      : `Group ${key} · ${images.length} unlabeled${guess}`;
    main.appendChild(groupSection(title, images, key));
  }
  if (!unlabeled.length) {
    const p = document.createElement("p");
    p.textContent = "No unlabeled images left in this folder.";
    main.appendChild(p);
  }
  for (const name of data.classes) {
    const images = data.images.filter((i) => i.label === name).sort(byGuess);
    const details = document.createElement("details");
    details.className = "labeled";
    const summary = document.createElement("summary");
    summary.textContent = `${name}: ${images.length} labeled`;
    details.appendChild(summary);
    details.appendChild(groupSection(`class ${name}`, images, "class:" + name));
    main.appendChild(details);
  }
  renderClasses();
  $("count").textContent = `${state.selected.size} selected`;
}

function renderClasses() {
  const box = $("classes");
  box.innerHTML = "";
  state.data.classes.forEach((name, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "class-btn";
    b.dataset.label = name;
    if (i < 9) {
      const k = document.createElement("kbd");
      k.textContent = String(i + 1);
      b.appendChild(k);
    }
    b.appendChild(document.createTextNode(name));
    b.addEventListener("click", () => assign(name));
    box.appendChild(b);
  });
}

function refreshSelection() {
  for (const fig of document.querySelectorAll("figure.tile")) {
    fig.classList.toggle("selected", state.selected.has(fig.dataset.path));
  }
  $("count").textContent = `${state.selected.size} selected`;
}

function selectGroup(paths) {
  const all = paths.every((p) => state.selected.has(p));
  for (const p of paths) { if (all) state.selected.delete(p); else state.selected.add(p); }
  refreshSelection();
}

function clicked(event) {
  const fig = event.target.closest("figure.tile");
  if (!fig) return;
  const path = fig.dataset.path;
  if (event.shiftKey && state.anchor !== null) {
    const a = state.order.indexOf(state.anchor), b = state.order.indexOf(path);
    if (a >= 0 && b >= 0) {
      for (const p of state.order.slice(Math.min(a, b), Math.max(a, b) + 1)) state.selected.add(p);
    }
  } else if (state.selected.has(path)) {
    state.selected.delete(path);
  } else {
    state.selected.add(path);
  }
  state.anchor = path;
  refreshSelection();
}

// Changes run one after another in the order asked: a key pressed while the previous change
// is still being saved or reloaded waits its turn instead of being dropped.
let queue = Promise.resolve();
function serially(task) {
  state.busy += 1;
  queue = queue
    .then(task)
    .catch((e) => say(`error: ${e}`, true))
    .finally(() => { state.busy -= 1; });
  return queue;
}

function assign(label) {
  label = (label || "").trim();
  if (!label) { say("type a class name first", true); return; }
  if (!state.selected.size) { say("select images first", true); return; }
  const paths = [...state.selected];  // what was selected when asked, not when its turn comes
  return serially(async () => {
    const r = await api("/api/label", { paths, label });
    if (r.ok) {
      if (r.payload.id !== null) state.mine.push(r.payload.id);
      for (const p of paths) state.selected.delete(p);
      $("new-class").value = "";
      say(`${r.payload.moved} images → ${label}`);
    } else if (r.status === 409) {
      say(`${r.payload.error}: the page is reloaded, check and assign again`, true);
    } else {
      say(r.payload.error || `error ${r.status}`, true);
    }
    await reload();
  });
}

function undo() {
  return serially(async () => {
    const id = state.mine.length ? state.mine[state.mine.length - 1] : undefined;
    const r = await api("/api/undo", id === undefined ? {} : { id });
    if (r.ok) {
      if (id !== undefined) state.mine.pop();
      say(`undone: change ${r.payload.undone} (${r.payload.moved} files moved back)`);
    } else {
      if (r.status === 409 && id !== undefined) state.mine.pop();
      say(r.payload.error || `error ${r.status}`, true);
    }
    await reload();
  });
}

function keys(event) {
  if (event.target.tagName === "INPUT") {
    if (event.key === "Enter") assign(event.target.value);
    if (event.key === "Escape") event.target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (/^[1-9]$/.test(event.key)) {
    const name = state.data && state.data.classes[Number(event.key) - 1];
    if (name) assign(name);
  } else if (event.key === "n") {
    event.preventDefault();
    $("new-class").focus();
  } else if (event.key === "u") {
    undo();
  } else if (event.key === "Escape") {
    state.selected.clear();
    refreshSelection();
  }
}

async function poll() {
  if (!state.busy && state.data) {
    const r = await api("/api/version");
    // Versions only grow: an answer older than the list shown (a poll that crossed one of
    // our own changes) is ignored.
    if (r.ok && !state.busy && r.payload.version > state.data.version) await reload();
  }
  setTimeout(poll, 3000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("groups").addEventListener("click", clicked);
  $("assign-new").addEventListener("click", () => assign($("new-class").value));
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", () => { state.selected.clear(); refreshSelection(); });
  document.addEventListener("keydown", keys);
  reload().then(() => setTimeout(poll, 3000));
});
