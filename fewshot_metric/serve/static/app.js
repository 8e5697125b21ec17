// The fewshot-metric web page: lists, registers and queries the classes of the server that
// serves it, through its HTTP API (same origin, relative URLs, so it also works under a path
// prefix). No build step, nothing from other hosts. Labels are user text: they reach the page
// only as text nodes and attribute values (`el` below), never as HTML.

const TOKEN_KEY = "fewshot-metric token";
const PAGE_SIZE = pageSize();

const byId = (id) => document.getElementById(id);
const state = {
  offset: 0, // of the page of classes shown
  chosen: [], // the files to register
  generation: 0, // of the class list drawn; thumbnails of older ones are dropped
  urls: { thumbs: [], chosen: [], queried: [] }, // object URLs, revoked when redrawn
};

/** `?limit=N` in the page's URL sets the classes per page (1..1000, default 50). */
function pageSize() {
  const asked = Number(new URLSearchParams(window.location.search).get("limit"));
  return Number.isInteger(asked) && asked >= 1 && asked <= 1000 ? asked : 50;
}

/** An element with `attributes` (null, undefined, false: left out) and `children`: nodes, or
 * strings, which become text nodes. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  node.append(...children);
  return node;
}

function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

/** Object URLs of `kind` (thumbs, chosen, queried): the old ones revoked, `blobs`' made. */
function objectUrls(kind, blobs) {
  for (const url of state.urls[kind].splice(0)) URL.revokeObjectURL(url);
  state.urls[kind] = blobs.map((blob) => URL.createObjectURL(blob));
  return state.urls[kind];
}

// ------------------------------------------------------------------------------- the API
class ApiError extends Error {
  /** The server's answer to a failed request: `status` (0: no answer), `kind`, `detail`. */
  constructor(status, kind, detail) {
    super(detail);
    this.status = status;
    this.kind = kind;
  }
}

/** fetch(path) with the token; a JSON `body` is sent as JSON, FormData as multipart.
 * -> the Response; a failed request throws an ApiError carrying the server's detail. */
async function request(method, path, body) {
  const headers = {};
  const token = window.sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "no_answer",
      `the server did not answer (${error.message}): is it still running?`);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function errorOf(response) {
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not the server's JSON error body (a proxy's page?): shown as it came, below
  }
  if (body !== null && typeof body.detail === "string") {
    return new ApiError(response.status, body.error ?? "error", body.detail);
  }
  return new ApiError(response.status, "http",
    `${response.statusText || "error"}: ${text.slice(0, 500) || "(empty answer)"}`);
}

async function getJSON(method, path, body) {
  return (await request(method, path, body)).json();
}

// ------------------------------------------------------------------------------- notices
function clearNotices() {
  byId("error").hidden = true;
  byId("error-text").replaceChildren();
  byId("status").hidden = true;
}

/** Shows that `action` failed and why (the server's detail), below earlier errors. */
function showError(action, error) {
  const where = error instanceof ApiError && error.status ? ` (${error.status} ${error.kind})` : "";
  const line = `${action}${where}: ${error.message}`;
  const lines = byId("error-text");
  if (![...lines.children].some((p) => p.textContent === line)) lines.append(el("p", {}, line));
  byId("error").hidden = false;
  byId("status").hidden = true;
}

function showStatus(text) {
  byId("status").textContent = text;
  byId("status").hidden = false;
}

/** Runs the user's action `work` (async): notices cleared, `button` disabled meanwhile, a
 * failure shown as `failed`: its message. */
async function act(failed, work, button = null) {
  clearNotices();
  if (button) button.disabled = true;
  try {
    await work();
  } catch (error) {
    showError(failed, error);
  } finally {
    if (button) button.disabled = false;
  }
}

// ------------------------------------------------------------------------------- reads
let refreshes = 0; // the latest refresh: failures of older ones (an old token) are stale

async function refresh() {
  const mine = ++refreshes;
  const current = () => mine === refreshes;
  await Promise.all([
    loadInfo().catch((error) => {
      if (!current()) return;
      byId("info").textContent = "server info unavailable";
      showError("Could not read the server's info", error);
    }),
    loadClasses().catch((error) => {
      if (current()) showError("Could not list the classes", error);
    }),
  ]);
}

async function loadInfo() {
  const info = await getJSON("GET", "info");
  const options = Object.entries(info.index.options ?? {}).map(([k, v]) => `${k}=${v}`);
  const parts = [
    `model ${String(info.fingerprint).slice(0, 12)}`,
    info.metric,
    `${info.mode} mode`,
    `${info.index.kind} index${options.length ? ` (${options.join(", ")})` : ""}`,
    plural(info.classes, "class", "classes"),
    plural(info.shots, "shot"),
  ];
  if (info.reject_distance !== null) {
    parts.push(`unknown beyond distance ${Number(formatDistance(info.reject_distance))}`);
  }
  byId("info").textContent = parts.join(" · ");
  byId("info").title = `model fingerprint ${info.fingerprint}\ncheckpoint ${info.checkpoint}`;
  byId("version").textContent = `Server version ${info.version}.`;
}

async function loadClasses() {
  const page = await getJSON("GET", `classes?offset=${state.offset}&limit=${PAGE_SIZE}`);
  if (page.classes.length === 0 && state.offset > 0) { // past the end: show the last page
    state.offset = Math.max(0, Math.ceil(page.total / PAGE_SIZE) - 1) * PAGE_SIZE;
    return loadClasses();
  }
  drawClasses(page);
}

function drawClasses(page) {
  state.generation += 1;
  objectUrls("thumbs", []);
  byId("class-list").replaceChildren(...page.classes.map(classItem));
  byId("class-empty").hidden = page.total > 0;
  byId("class-total").textContent = plural(page.total, "class", "classes");
  const last = page.offset + page.classes.length;
  byId("page-info").textContent = `${page.total ? page.offset + 1 : 0}–${last} of ${page.total}`;
  byId("page-prev").disabled = page.offset === 0;
  byId("page-next").disabled = last >= page.total;
  byId("page-prev").parentElement.hidden = page.offset === 0 && last >= page.total;
}

/** A class of the list: thumbnail (a placeholder until it loads, or when it has none: then
 * data-thumb="none"), label, shot count, rename and remove. */
function classItem({ label, count }) {
  const item = el("li", { class: "class", "data-testid": "class-item", "data-thumb": "loading" },
    el("div", { class: "thumb placeholder", role: "img", "aria-label": `no thumbnail of ${label}`,
      "data-testid": "class-thumb-placeholder" }, Array.from(label.trim())[0] ?? "?"),
    el("div", { class: "name" },
      el("span", { class: "label", "data-testid": "class-label" }, label),
      el("span", { class: "muted", "data-testid": "class-count" }, plural(count, "shot"))));
  const rename = el("button", { type: "button", "data-testid": "class-rename",
    "aria-label": `Rename ${label}` }, "Rename");
  const remove = el("button", { type: "button", class: "danger", "data-testid": "class-remove",
    "aria-label": `Remove ${label}` }, "Remove");
  rename.addEventListener("click", () => startRename(item, label));
  remove.addEventListener("click", () => removeClass(label, count, remove));
  item.append(el("div", { class: "actions" }, rename, remove));
  loadThumbnail(item, label, state.generation);
  return item;
}

async function loadThumbnail(item, label, generation) {
  let blob = null;
  try {
    blob = await (await request("GET", `thumbnail?label=${encodeURIComponent(label)}`)).blob();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) {
      showError(`Could not load the thumbnail of ${label}`, error);
    }
  }
  if (generation !== state.generation) return; // the list was redrawn meanwhile
  if (blob === null) {
    item.dataset.thumb = "none";
    return;
  }
  const url = URL.createObjectURL(blob);
  state.urls.thumbs.push(url);
  item.querySelector(".thumb").replaceWith(el("img", { class: "thumb", src: url, width: 64,
    height: 64, alt: `thumbnail of ${label}`, "data-testid": "class-thumb" }));
  item.dataset.thumb = "loaded";
}

// ------------------------------------------------------------------------------- changes
let renameForms = 0;

function startRename(item, label) {
  if (item.querySelector("form")) return;
  const input = el("input", { id: `rename-${(renameForms += 1)}`, autocomplete: "off",
    "data-testid": "rename-input" });
  input.value = label;
  const save = el("button", { type: "submit", class: "primary", "data-testid": "rename-save" },
    "Save");
  const cancel = el("button", { type: "button", "data-testid": "rename-cancel" }, "Cancel");
  const form = el("form", { class: "rename", "data-testid": "rename-form" },
    el("label", { for: input.id }, `New label for ${label}`), input, save, cancel);
  cancel.addEventListener("click", () => form.remove());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(`Could not rename ${label}`, async () => {
      const answer = await getJSON("POST", "rename", { label, new_label: input.value });
      showStatus(`Renamed ${label} to ${answer.label}.`);
      await refresh();
    }, save);
  });
  item.append(form);
  input.select();
  input.focus();
}

function removeClass(label, count, button) {
  const question = `Remove the class "${label}" and its ${plural(count, "shot")}? `
    + "This cannot be undone.";
  if (!window.confirm(question)) return;
  act(`Could not remove ${label}`, async () => {
    const answer = await getJSON("DELETE", `class?label=${encodeURIComponent(label)}`);
    showStatus(`Removed ${answer.removed}; ${plural(answer.classes, "class", "classes")} left.`);
    await refresh();
  }, button);
}

function setChosen(files) {
  state.chosen = files;
  const urls = objectUrls("chosen", files);
  byId("register-chosen").replaceChildren(...files.map((file, i) => el("li", {},
    el("img", { src: urls[i], alt: file.name, width: 32, height: 32 }),
    el("span", {}, file.name))));
}

function register(event) {
  event.preventDefault();
  act("Could not register", async () => {
    if (state.chosen.length === 0) throw new Error("choose or drop at least one image first");
    const form = new FormData();
    form.append("label", byId("register-label").value);
    for (const file of state.chosen) form.append("images", file, file.name);
    const answer = await getJSON("POST", "register", form);
    showStatus(answer.created
      ? `Created ${answer.label} with ${plural(answer.added, "shot")}.`
      : `Added ${plural(answer.added, "shot")} to ${answer.label}: `
        + `${plural(answer.count, "shot")} now.`);
    byId("register-form").reset();
    setChosen([]);
    await refresh();
  }, byId("register-submit"));
}

// ------------------------------------------------------------------------------- queries
function query(files) {
  if (files.length === 0) return;
  const results = byId("query-results");
  act("Could not query", async () => {
    results.replaceChildren(el("p", { class: "muted" }, "Querying…"));
    const form = new FormData();
    for (const file of files) form.append("images", file, file.name);
    form.append("k", byId("query-k").value);
    try {
      const answer = await getJSON("POST", "query", form);
      const urls = objectUrls("queried", files);
      results.replaceChildren(...answer.predictions.map((p, i) => predictionCard(p, urls[i])));
    } catch (error) {
      results.replaceChildren();
      throw error;
    }
  });
}

function formatDistance(d) {
  return Number(d).toPrecision(4);
}

/** One image's answer: its top label, or "unknown" when the store rejected it (the nearest
 * class is farther than the rejection distance), then the k nearest with scores and
 * distances. */
function predictionCard(p, url) {
  const answer = el("p", { class: p.rejected ? "answer unknown" : "answer",
    "data-testid": "prediction-answer", "data-rejected": String(p.rejected) },
  p.rejected ? "unknown" : p.label);
  const rows = p.labels.map((label, r) => el("tr", { "data-testid": "prediction-row",
    class: p.rejected && r === 0 ? "rejected" : null },
    el("td", { class: "num" }, String(r + 1)),
    el("td", { "data-testid": "row-label" }, label),
    el("td", { class: "num", "data-testid": "row-score" }, p.scores[r].toFixed(3)),
    el("td", { class: "num", "data-testid": "row-distance" }, formatDistance(p.distances[r]))));
  return el("article", { class: "prediction", "data-testid": "prediction" },
    el("img", { class: "preview", src: url, alt: `query image ${p.image}` }),
    el("div", { class: "answer-box" },
      answer,
      p.rejected ? el("p", { class: "muted" },
        "farther than the rejection distance from every class") : "",
      el("p", { class: "muted small", "data-testid": "prediction-image" }, p.image),
      el("table", {},
        el("caption", { class: "visually-hidden" }, `Nearest classes of ${p.image}`),
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, "#"), el("th", { scope: "col" }, "Label"),
          el("th", { scope: "col", class: "num" }, "Score"),
          el("th", { scope: "col", class: "num" }, "Distance"))),
        el("tbody", {}, ...rows))));
}

/** Pasted image files (Ctrl+V anywhere on the page) are queried; pasted text is left to the
 * field it goes into. */
function pasted(event) {
  const files = [...(event.clipboardData?.files ?? [])];
  if (files.length === 0) return;
  event.preventDefault();
  query(files.map((file, i) => new File([file],
    files.length > 1 ? `pasted image ${i + 1}` : "pasted image", { type: file.type })));
}

function dropZone(zone, onFiles) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    onFiles([...event.dataTransfer.files]);
  });
}

// ------------------------------------------------------------------------------- wiring
function useToken(event) {
  event.preventDefault();
  const token = byId("token").value.trim();
  if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
  else window.sessionStorage.removeItem(TOKEN_KEY);
  clearNotices();
  showStatus(token ? "The token is kept for this tab and sent with every request."
    : "No token: requests are sent without one.");
  refresh();
}

function start() {
  byId("token").value = window.sessionStorage.getItem(TOKEN_KEY) ?? "";
  byId("token-form").addEventListener("submit", useToken);
  byId("error-close").addEventListener("click", clearNotices);
  byId("register-form").addEventListener("submit", register);
  byId("register-files").addEventListener("change", (e) => setChosen([...e.target.files]));
  dropZone(byId("register-drop"), (files) => {
    byId("register-files").value = "";
    setChosen(files);
  });
  byId("query-form").addEventListener("submit", (event) => event.preventDefault());
  byId("query-files").addEventListener("change", (event) => {
    query([...event.target.files]);
    event.target.value = ""; // choosing the same file again queries again
  });
  dropZone(byId("query-drop"), query);
  document.addEventListener("paste", pasted);
  // a file dropped beside a drop zone must not make the browser leave the page for it
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  byId("page-prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    loadClasses().catch((error) => showError("Could not list the classes", error));
  });
  byId("page-next").addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    loadClasses().catch((error) => showError("Could not list the classes", error));
  });
  refresh();
}

start();
