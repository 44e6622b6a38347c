// The web page of the photo embeddings API. Plain JS, no build step.
// The token lives in sessionStorage only (this tab, until it closes) and travels in the
// Authorization header of every call; thumbnails are fetched with it and shown from blob: URLs.
// Everything the server returns is shown as text (textContent), never parsed as HTML.
"use strict";

const TOKEN_KEY = "photo-embeddings-token";
const API = new URL("..", location.href); // the page is at <api>/ui/
const POLL_MS = 2000;
const THUMBNAIL_SIZE = 256;
const FINAL = new Set(["SUCCEEDED", "FAILED", "STOPPED"]);
const MAX_SEARCH_OFFSET = 1000; // a search's offset, at most (a listing's is not bounded)

const $ = (selector) => document.querySelector(selector);
const state = {
  poll: null, polling: false, pollFailed: false, jobStatus: new Map(), openErrors: new Set(), blobs: [],
  query: null, offset: 0, // the search or listing shown, and where its page starts
  scope: "search", // the key's (GET whoami): the page offers only what it may do
  logs: new Map(), // job id -> {offset, lines}: the live logs of the jobs whose log is open
  people: new Map(), peopleOf: null, // id -> person, of the collection the people section or the search shows last
  models: [], // the app's models (GET models), for creating and reindexing collections
  results: [], viewing: null, // the page of results shown, and the index of the one open large
};

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function detailText(detail) {
  const field = (loc) => (["body", "query"].includes(loc[0]) ? loc.slice(1) : loc).join(".");
  if (Array.isArray(detail)) return detail.map((d) => `${field(d.loc || [])}: ${d.msg}`).join("; ");
  return typeof detail === "string" ? detail : JSON.stringify(detail);
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new ApiError(401, "no token");
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${token}`);
  let response;
  try {
    response = await fetch(new URL(path, API), { ...options, headers });
  } catch (error) {
    throw new ApiError(0, `the server cannot be reached (${error.message})`);
  }
  if (response.status === 401) {
    signOut("The server refused this token. Enter it again.");
    throw new ApiError(401, "the server refused the token");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = detailText((await response.json()).detail);
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, `${response.status}: ${detail}`);
  }
  return response;
}

function say(target, text, isError = false) {
  target.textContent = text;
  target.classList.toggle("error", isError);
  target.hidden = !text;
}

function failed(target) {
  return (error) => {
    if (error.status !== 401) say(target, error.message, true);
  };
}

// --- the token ---------------------------------------------------------------------------------

function signIn(event) {
  event.preventDefault();
  const input = $("#token");
  const token = input.value.trim();
  input.value = "";
  if (!token) {
    say($("#notice"), "Enter the API token.", true);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  say($("#notice"), "");
  start();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(state.poll);
  state.poll = null;
  clearResults();
  $("#app").hidden = true;
  $("#signed-in").hidden = true;
  $("#token-form").hidden = false;
  say($("#notice"), message, Boolean(message));
  $("#token").focus();
}

const SCOPES = ["search", "ingest", "admin"];
const allows = (needed) => SCOPES.indexOf(state.scope) >= SCOPES.indexOf(needed);

async function start() {
  $("#token-form").hidden = true;
  $("#signed-in").hidden = false;
  try {
    const key = await (await api("whoami")).json();
    state.scope = key.scope;
    $("#key-name").textContent = `${key.name} (${key.scope})`;
  } catch (error) {
    failed($("#notice"))(error);
    return;
  }
  // A key of the search scope sees no ingestion, jobs or changes to people.
  $("#ingest-section").hidden = !allows("ingest");
  $("#jobs-section").hidden = !allows("ingest");
  $("#create-form").hidden = !allows("admin");
  $("#app").hidden = false;
  if (allows("admin")) await loadModels();
  loadCollections().then(pollJobs);
  state.poll = setInterval(pollJobs, POLL_MS);
}

// --- collections -------------------------------------------------------------------------------

async function loadCollections() {
  try {
    const { collections } = await (await api("collections")).json();
    renderCollections(collections);
  } catch (error) {
    failed($("#notice"))(error);
  }
}

async function loadModels() {
  try {
    state.models = (await (await api("models")).json()).models;
  } catch (error) {
    failed($("#notice"))(error);
  }
  $("#create-form select[name=model]").replaceChildren(...state.models.map((model) => el("option",
    { value: model.name, text: model.default ? `${model.name} (the default)` : model.name })));
}

async function createCollection(event) {
  event.preventDefault();
  const form = event.target;
  const message = form.querySelector(".message");
  const body = { name: form.name.value.trim(), model: form.model.value || null, caption: form.caption.checked,
    read_text: form.read_text.checked, find_faces: form.find_faces.checked };
  say(message, "Creating… (a model not in use yet starts first)");
  try {
    const made = await (await api("collections", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    })).json();
    const on = made.enrichments_on.length ? `, making ${made.enrichments_on.join(", ")} for every photo` : "";
    say(message, `Created ${made.name} (${made.model}${on})`);
    form.name.value = "";
    loadCollections();
  } catch (error) {
    failed(message)(error);
  }
}

// An admin reindexes a collection into another of the app's models: a Ray job, followed in the jobs table.
function reindexForm(collection) {
  const form = el("form", { class: "reindex-form" },
    el("select", { name: "model" }, ...state.models.map((model) => el("option", { value: model.name, text: model.name }))),
    el("button", { type: "submit", class: "secondary", text: "Reindex" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const { job_id: jobId } = await (await api(`collections/${encodeURIComponent(collection)}/reindex`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: form.model.value }),
      })).json();
      say($("#notice"), `Reindexing ${collection} into ${form.model.value}: job ${jobId}`);
      pollJobs();
    } catch (error) {
      failed($("#notice"))(error);
    }
  });
  return form;
}

// An admin deletes a collection by typing its name again; what was removed is said.
function deleteForm(collection) {
  if (!allows("admin")) return el("td");
  const form = el("form", { class: "delete-form" },
    el("input", { name: "confirm", placeholder: "type its name to delete", autocomplete: "off" }),
    el("button", { type: "submit", class: "secondary danger", text: "Delete" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await (await api(`collections/${encodeURIComponent(collection)}`, {
        method: "DELETE", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ confirm: form.confirm.value }),
      })).json();
      say($("#notice"), `Deleted: ${answer.removed.map((r) => `${r.name} (${r.records} records)`).join(", ")}`);
      loadCollections();
    } catch (error) {
      failed($("#notice"))(error);
    }
  });
  return el("td", {}, form, state.models.length > 1 ? reindexForm(collection) : null);
}

// What a collection holds (GET collections/{name}), asked for when its details are opened.
function detailsOf(collection) {
  const details = el("details", { class: "collection-details" }, el("summary", { text: collection }), el("dl"));
  details.addEventListener("toggle", async () => {
    if (!details.open) return;
    try {
      const held = await (await api(`collections/${encodeURIComponent(collection)}?failures=20`)).json();
      const last = held.last_ingestion;
      const facts = [
        ["records", held.records], ["photos", held.photos], ["model", `${held.model} (${held.weights})`],
        ["on for every ingestion", held.enrichments_on.join(", ") || "nothing"],
        ["captioned", held.enrichments.captioned], ["with text", held.enrichments.text_read],
        ["looked for faces", held.enrichments.looked_for_faces], ["faces", held.faces], ["people", held.people],
        ["on disk", held.disk_bytes == null ? "not known (a Chroma server)" : `${(held.disk_bytes / 1e6).toFixed(1)} MB of `
          + `vector index (the store: ${(held.store_disk_bytes / 1e6).toFixed(1)} MB)`],
        ["last ingestion", last ? `${last.at}: ${last.embedded} new, ${last.skipped_existing} already stored, `
          + `${last.failed} failed, ${last.removed} removed` : "none yet"],
        ["failed files", held.failed_files],
      ];
      details.querySelector("dl").replaceChildren(...facts.flatMap(([key, value]) => [el("dt", { text: key }),
        el("dd", { text: String(value) })]),
      ...(held.failures || []).flatMap((f) => [el("dt", { class: "error", text: "failed" }),
        el("dd", {}, el("code", { text: f.path }), ` ${f.reason}`)]));
    } catch (error) {
      failed($("#notice"))(error);
    }
  });
  return details;
}

function renderCollections(collections) {
  const body = $("#collections tbody");
  const open = new Set([...document.querySelectorAll("#collections tr[data-name] details.collection-details[open]")]
    .map((details) => details.closest("tr").dataset.name));
  body.replaceChildren(...collections.map((c) => el("tr", { "data-name": c.name },
    el("td", { class: "name" }, detailsOf(c.name)),
    el("td", { class: "num count", text: String(c.count) }),
    el("td", { text: c.model ?? "" }),
    el("td", {}, el("span", { text: c.weights ?? "" }),
      c.random_weights ? el("span", { class: "badge warn", text: "random: ranking means nothing" }) : null),
    deleteForm(c.name),
  )));
  for (const name of open) {  // kept open across a refresh, their facts asked for again
    const details = body.querySelector(`tr[data-name='${CSS.escape(name)}'] details.collection-details`);
    if (details) details.open = true;
  }
  $("#no-collections").hidden = collections.length > 0;
  $("#collection-names").replaceChildren(...collections.map((c) => el("option", { value: c.name })));
  for (const select of document.querySelectorAll("#search-form select[name=collection], #similar-form select[name=collection], "
    + "#people-form select[name=collection]")) {
    const chosen = select.value;
    select.replaceChildren(...collections.map((c) => el("option", { value: c.name, text: `${c.name} (${c.count})` })));
    if (collections.some((c) => c.name === chosen)) select.value = chosen;
  }
  const searched = $("#search-form select[name=collection]").value;
  if (searched && searched !== state.peopleOf) loadPeople(searched);
}

// --- ingestion ---------------------------------------------------------------------------------

async function startIngestion(event) {
  event.preventDefault();
  const form = event.target;
  const message = form.querySelector(".message");
  const paths = form.paths.value.split("\n").map((p) => p.trim()).filter(Boolean);
  const body = { paths, collection: form.collection.value.trim(), caption: form.caption.checked,
    read_text: form.read_text.checked, find_faces: form.find_faces.checked };
  // A watch ingests the folders, then follows them (deletions included) until it is stopped.
  const watch = form.watch.checked;
  if (!watch) body.prune = form.prune.checked;
  try {
    const response = await api(watch ? "watches" : "ingest", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const { job_id: jobId } = await response.json();
    say(message, watch ? `Watching: ${jobId} (stop it in the jobs table)` : `Started ${jobId}`);
    pollJobs();
  } catch (error) {
    failed(message)(error);
  }
}

async function uploadPhotos(event) {
  event.preventDefault();
  const form = event.target;
  const message = form.querySelector(".message");
  const data = new FormData();
  for (const file of form.files.files) data.append("files", file, file.name);
  data.append("collection", form.collection.value.trim());
  data.append("caption", form.caption.checked ? "true" : "false");
  data.append("read_text", form.read_text.checked ? "true" : "false");
  data.append("find_faces", form.find_faces.checked ? "true" : "false");
  say(message, "Uploading…");
  try {
    // ?wait=true: a few photos are stored by the time the answer comes (HTTP 200), so they can be
    // searched at once; many become a Ray job (HTTP 202), followed in the jobs table.
    const response = await api("ingest/upload?wait=true", { method: "POST", body: data });
    const job = await response.json();
    if (response.status === 202) {
      say(message, `Uploaded ${job.files} file(s); started ${job.job_id}`);
    } else {
      const outcome = `${job.embedded} new, ${job.skipped_existing} already stored, ${job.failed} failed`;
      say(message, `Stored ${job.files} file(s) in ${job.collection}: ${outcome} (${job.job_id})`, job.status === "FAILED");
    }
    form.files.value = "";
    loadCollections();
    pollJobs();
  } catch (error) {
    failed(message)(error);
  }
}

// --- jobs --------------------------------------------------------------------------------------

async function pollJobs() {
  if (state.polling || !sessionStorage.getItem(TOKEN_KEY) || !allows("ingest")) return;
  state.polling = true;
  try {
    const { jobs } = await (await api("ingest")).json();
    if (state.pollFailed) say($("#notice"), ""); // the server answers again
    state.pollFailed = false;
    renderJobs(jobs);
    for (const [jobId, kept] of state.logs) if (!kept.final) followLog(jobId);
    const finishedNow = jobs.some((job) => FINAL.has(job.status) && state.jobStatus.has(job.job_id)
      && !FINAL.has(state.jobStatus.get(job.job_id)));
    const running = jobs.some((job) => !FINAL.has(job.status));
    state.jobStatus = new Map(jobs.map((job) => [job.job_id, job.status]));
    if (finishedNow || running) loadCollections(); // counts grow while a job writes
  } catch (error) {
    state.pollFailed = true;
    failed($("#notice"))(error);
  } finally {
    state.polling = false;
  }
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function errorsCell(job) {
  const lines = job.errors.map((e) => el("li", {}, el("code", { text: e.name || e.path, title: e.path }), ` ${e.reason}`));
  if (job.status === "FAILED" && job.message) lines.unshift(el("li", { class: "error", text: job.message }));
  if (!lines.length) return el("td");
  const details = el("details", { open: state.openErrors.has(job.job_id) },
    el("summary", { text: `${lines.length} error${lines.length === 1 ? "" : "s"}` }), el("ul", {}, ...lines));
  details.addEventListener("toggle", () => {
    if (details.open) state.openErrors.add(job.job_id);
    else state.openErrors.delete(job.job_id);
  });
  return el("td", { class: "errors" }, details);
}

// A job's log, live while it is open: its lines asked for from where the last answer ended.
function logCell(job) {
  const kept = state.logs.get(job.job_id);
  const details = el("details", { class: "log", open: Boolean(kept) }, el("summary", { text: "Log" }),
    el("pre", { text: kept ? kept.lines.join("\n") : "" }));
  details.addEventListener("toggle", () => {
    if (details.open && !state.logs.has(job.job_id)) {
      state.logs.set(job.job_id, { offset: 0, lines: [] });
      followLog(job.job_id);
    } else if (!details.open) {
      state.logs.delete(job.job_id);
    }
  });
  return el("td", {}, details);
}

async function followLog(jobId) {
  const kept = state.logs.get(jobId);
  if (!kept || kept.busy) return;
  kept.busy = true;
  try {
    const answer = await (await api(`ingest/${encodeURIComponent(jobId)}/logs?offset=${kept.offset}`)).json();
    kept.lines.push(...answer.lines);
    kept.offset = answer.offset;
    const shown = document.querySelector(`#jobs tr[data-job-id='${jobId}'] .log pre`);
    if (shown) shown.textContent = kept.lines.join("\n");
    kept.final = FINAL.has(answer.status);
  } catch (error) {
    failed($("#notice"))(error);
  } finally {
    kept.busy = false;
  }
}

function stopButton(job) {
  if (FINAL.has(job.status)) return el("td");
  const button = el("button", { type: "button", class: "secondary", text: "Stop" });
  button.addEventListener("click", () => api(`ingest/${encodeURIComponent(job.job_id)}`, { method: "DELETE" })
    .then(pollJobs, failed($("#notice"))));
  return el("td", {}, button);
}

function renderJobs(jobs) {
  const counts = ["discovered", "embedded", "skipped_existing", "duplicates", "failed", "removed", "captioned", "text_read",
    "looked_for_faces"];
  $("#jobs tbody").replaceChildren(...jobs.map((job) => el("tr", { "data-job-id": job.job_id, "data-collection": job.collection ?? "" },
    el("td", { text: when(job.start_time), title: job.job_id }),
    el("td", { text: job.collection ?? "" }),
    el("td", {}, el("span", { class: `status badge ${job.status.toLowerCase()}`, text: job.status }),
      job.watch ? el("span", { class: "badge watch", text: "watch" }) : null),
    ...counts.map((key) => el("td", { class: `num ${key}`, text: String(job[key]) })),
    errorsCell(job),
    logCell(job),
    stopButton(job),
  )));
  $("#no-jobs").hidden = jobs.length > 0;
}

// --- search ------------------------------------------------------------------------------------

function clearResults() {
  state.blobs.forEach((url) => URL.revokeObjectURL(url));
  state.blobs = [];
  $("#results").replaceChildren();
}

// The filters the page offers, by the API's names; blank ones are left out.
const FILTERS = ["date_from", "date_to", "camera_make", "camera_model", "folder", "has_caption", "caption_words", "place",
  "text_words", "person"];

function filterValues(form) {
  const values = {};
  for (const name of FILTERS) {
    const value = form[name].value.trim();
    if (value) values[name] = value;
  }
  return values;
}

async function search(event) {
  event.preventDefault();
  const form = event.target;
  const message = $("#search-message");
  const kind = event.submitter ? { "search-image": "photo", browse: "browse" }[event.submitter.id] || "text" : "text";
  const query = { kind, collection: form.collection.value, k: Number(form.k.value || "12"), filters: filterValues(form) };
  if (kind === "photo") {
    query.file = form.file.files[0];
    if (!query.file) return say(message, "Choose a photo to search by.", true);
  } else if (kind === "text") {
    query.text = form.text.value.trim();
    if (!query.text) return say(message, "Type some text to search for, or browse.", true);
    query.mode = form.mode.value;
  }
  state.query = query;
  await showPage(0);
}

// One page of the current query: a search by text or photo (POST search), or a listing (GET photos).
function pageRequest(query, offset) {
  const fields = { ...query.filters, k: String(query.k), offset: String(offset) };
  if (query.kind === "browse") {
    const params = new URLSearchParams(fields);
    return [`collections/${encodeURIComponent(query.collection)}/photos?${params}`, {}];
  }
  if (query.kind === "photo") {
    const data = new FormData();
    data.append("file", query.file, query.file.name);
    data.append("collection", query.collection);
    for (const [name, value] of Object.entries(fields)) data.append(name, value);
    return ["search", { method: "POST", body: data }];
  }
  const body = { ...query.filters, collection: query.collection, text: query.text, mode: query.mode, k: query.k, offset };
  return ["search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }];
}

async function showPage(offset) {
  const query = state.query;
  const message = $("#search-message");
  say(message, query.kind === "browse" ? "Listing…" : "Searching…");
  try {
    const { results, total, words = [] } = await (await api(...pageRequest(query, offset))).json();
    clearResults();
    const count = `${results.length} result${results.length === 1 ? "" : "s"} in ${query.collection}`;
    const range = results.length ? `${offset + 1}–${offset + results.length}` : `none past ${offset}`;
    const filtered = Object.keys(query.filters).length > 0;
    say(message, count + (total == null ? "" : ` · ${range} of ${total}`)
      + (results.length === 0 && offset === 0 && filtered ? ": none match the filters" : ""));
    state.results = results.map((result) => ({ collection: query.collection, result, words }));
    $("#results").append(...state.results.map((shown, index) => resultCard(shown.collection, shown.result, shown.words, index)));
    state.offset = offset;
    $("#pages").hidden = offset === 0 && results.length < query.k;
    $("#previous-page").disabled = offset === 0;
    $("#next-page").disabled = results.length < query.k || (total != null && offset + results.length >= total)
      || (query.kind !== "browse" && offset + query.k > MAX_SEARCH_OFFSET);
  } catch (error) {
    failed(message)(error);
  }
}

const SHOWN_FIRST = ["path", "width", "height", "format", "file_size", "datetime_original", "camera_make", "camera_model"];

// A line of text with the query's words in it marked (<mark>), built as nodes, never as HTML.
function highlighted(tag, className, text, words) {
  const line = el(tag, { class: className });
  for (const part of text.split(/(\p{N}+|\p{L}+)/u)) {  // words as the search cuts them: letters, or digits
    line.append(words.includes(part.toLowerCase()) ? el("mark", { text: part }) : document.createTextNode(part));
  }
  return line;
}

function resultCard(collection, result, words = [], index = null) {
  const metadata = result.metadata || {};
  const image = el("img", { alt: result.name || result.id, width: THUMBNAIL_SIZE, height: THUMBNAIL_SIZE });
  const figure = el("figure", { class: "thumb" }, image);
  loadThumbnail(collection, result.id, image, figure);
  if (index !== null) {
    figure.classList.add("opens");
    figure.title = "Open it large";
    figure.addEventListener("click", () => openLarge(index));
  }
  const keys = [...SHOWN_FIRST.filter((key) => key in metadata),
    ...Object.keys(metadata).filter((key) => !SHOWN_FIRST.includes(key) && key !== "caption" && key !== "text").sort()];
  return el("article", { class: "result", "data-id": result.id },
    figure,
    el("div", { class: "score", text: result.score === null ? (metadata.datetime_original || "undated")
      : `score ${result.score.toFixed(3)}` }),
    el("div", { class: "filename", text: result.name || result.path || result.id }),
    ...(result.paths || []).filter((path) => path !== result.path)
      .map((path) => el("div", { class: "copy", text: `also at ${path}` })),
    result.raw ? el("div", { class: "copy raw", text: `RAW: ${result.raw.path}` }) : null,
    result.place ? highlighted("div", "place", result.place, words) : null,
    result.text ? highlighted("p", "text", result.text.split("\n")[0], words) : null,
    result.caption ? highlighted("p", "caption", result.caption, words) : null,
    (metadata.people || []).length ? el("div", { class: "people", text: `with ${(metadata.people || [])
      .map((id) => state.people.get(id)?.name || "someone unnamed").join(", ")}` }) : null,
    result.matched && result.matched.some((why) => why !== "vector")
      ? el("div", { class: "matched", text: `matched: ${result.matched.join(", ")}` }) : null,
    el("details", {}, el("summary", { text: "Metadata" }),
      el("dl", {}, ...keys.flatMap((key) => [el("dt", { text: key }), el("dd", { text: String(metadata[key]) })]))),
  );
}

// --- a result, large ----------------------------------------------------------------------------

const LARGE_SIZE = 1024; // the largest thumbnail the API makes

// The result at `index` of the page shown, large, with all the record has; Previous and Next step through the
// results, into the page before or after at either end.
function openLarge(index) {
  const { collection, result, words } = state.results[index];
  const metadata = result.metadata || {};
  state.viewing = index;
  const image = $("#viewer-image");
  image.removeAttribute("src");
  $("#viewer .large").classList.remove("missing");
  $("#viewer .large figcaption")?.remove();
  image.alt = result.name || result.path || result.id;
  loadThumbnail(collection, result.id, image, $("#viewer .large"), LARGE_SIZE);
  const people = (metadata.people || []).map((id) => state.people.get(id)?.name || "someone unnamed");
  const facts = [["score", result.score === null ? null : result.score.toFixed(3)], ["path", result.path],
    ["taken", metadata.datetime_original], ["camera", [metadata.camera_make, metadata.camera_model].filter(Boolean).join(" ")],
    ["people", people.join(", ")]];
  $("#viewer-facts").replaceChildren(...[
    el("h3", { class: "viewer-name", text: result.name || result.path || result.id }),
    el("dl", {}, ...facts.filter(([, value]) => value).flatMap(([key, value]) => [el("dt", { text: key }), el("dd", { text: value })])),
    result.place ? highlighted("div", "place", result.place, words) : null,
    result.caption ? highlighted("p", "caption", result.caption, words) : null,
    result.text ? highlighted("pre", "text", result.text, words) : null,
    el("details", {}, el("summary", { text: "Metadata" }), el("dl", {}, ...Object.keys(metadata).sort()
      .flatMap((key) => [el("dt", { text: key }), el("dd", { text: String(metadata[key]) })])))].filter(Boolean));
  $("#viewer-position").textContent = `${state.offset + index + 1} of this search`;
  $("#viewer-previous").disabled = index === 0 && state.offset === 0;
  $("#viewer-next").disabled = index === state.results.length - 1 && $("#next-page").disabled;
  if (!$("#viewer").open) $("#viewer").showModal();
}

async function stepLarge(by) {
  const index = state.viewing + by;
  if (index >= 0 && index < state.results.length) return openLarge(index);
  await showPage(by > 0 ? state.offset + state.query.k : Math.max(0, state.offset - state.query.k));
  if (state.results.length) openLarge(by > 0 ? 0 : state.results.length - 1);
}

async function loadThumbnail(collection, id, image, figure, size = THUMBNAIL_SIZE) {
  try {
    const path = `thumbnails/${encodeURIComponent(collection)}/${encodeURIComponent(id)}?size=${size}`;
    const url = URL.createObjectURL(await (await api(path)).blob());
    state.blobs.push(url);
    image.src = url;
  } catch (error) {
    figure.classList.add("missing");
    figure.append(el("figcaption", { class: "error", text: error.message }));
  }
}

// --- people ----------------------------------------------------------------------------------------

// The people of a collection: kept for the search's person filter (the named ones) and the results' names.
async function loadPeople(collection) {
  state.peopleOf = collection;
  try {
    const { people } = await (await api(`collections/${encodeURIComponent(collection)}/people`)).json();
    state.people = new Map(people.map((person) => [person.id, person]));
  } catch {
    state.people = new Map();
  }
  const select = $("#search-form select[name=person]");
  const chosen = select.value;
  const named = [...state.people.values()].filter((person) => person.name);
  select.replaceChildren(el("option", { value: "", text: "anyone" }),
    ...named.map((person) => el("option", { value: person.id, text: `${person.name} (${person.faces})` })));
  if (named.some((person) => person.id === chosen)) select.value = chosen;
  return [...state.people.values()];
}

function faceImage(collection, faceId, size = 96) {
  const image = el("img", { alt: "a face", width: size, height: size });
  const figure = el("figure", { class: "thumb face" }, image);
  api(`collections/${encodeURIComponent(collection)}/faces/${encodeURIComponent(faceId)}/thumbnail?size=${size}`)
    .then((answer) => answer.blob())
    .then((blob) => {
      const url = URL.createObjectURL(blob);
      state.blobs.push(url);
      image.src = url;
    }, () => figure.classList.add("missing"));
  return figure;
}

async function showPeople(event) {
  event?.preventDefault();
  const collection = $("#people-form select[name=collection]").value;
  const message = $("#people-message");
  $("#person-faces").replaceChildren();
  try {
    const people = await loadPeople(collection);
    say(message, `${people.length} ${people.length === 1 ? "person" : "people"} in ${collection}`
      + (people.length ? "" : ": ingest with “Find the faces” checked"));
    $("#people").replaceChildren(...people.map((person) => personCard(collection, person, people)));
  } catch (error) {
    failed(message)(error);
  }
}

function personCard(collection, person, people) {
  const call = (path, body) => api(`collections/${encodeURIComponent(collection)}/${path}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }).then(() => showPeople(), failed($("#people-message")));
  const nameForm = el("form", { class: "name-form" },
    el("input", { name: "name", value: person.name || "", placeholder: "name", maxLength: 100, required: true }),
    el("button", { type: "submit", text: "Name" }));
  nameForm.addEventListener("submit", (event) => {
    event.preventDefault();
    call(`people/${encodeURIComponent(person.id)}/name`, { name: nameForm.name.value });
  });
  const others = people.filter((other) => other.id !== person.id);
  const mergeForm = el("form", { class: "merge-form" },
    el("select", { name: "into" }, ...others.map((other) => el("option", { value: other.id, text: other.name || other.id }))),
    el("button", { type: "submit", class: "secondary", text: "Merge into" }));
  mergeForm.addEventListener("submit", (event) => {
    event.preventDefault();
    call("people/merge", { into: mergeForm.into.value, other: person.id });
  });
  const facesButton = el("button", { type: "button", class: "secondary", text: "Faces" });
  facesButton.addEventListener("click", () => showFaces(collection, person, people));
  const photosButton = el("button", { type: "button", class: "secondary", text: "Photos" });
  photosButton.addEventListener("click", () => {
    const form = $("#search-form");
    form.collection.value = collection;
    form.person.value = person.id;
    state.query = { kind: "browse", collection, k: Number(form.k.value || "12"), filters: { person: person.id } };
    showPage(0);
  });
  return el("article", { class: "person", "data-person": person.id },
    person.cover ? faceImage(collection, person.cover.id) : null,
    el("div", { class: "person-name", text: person.name || "no name yet" }),
    el("div", { class: "muted", text: `${person.faces} face${person.faces === 1 ? "" : "s"}` }),
    allows("ingest") ? nameForm : null, others.length && allows("ingest") ? mergeForm : null,
    el("div", {}, facesButton, photosButton));
}

async function showFaces(collection, person, people) {
  const message = $("#people-message");
  try {
    const { faces } = await (await api(`collections/${encodeURIComponent(collection)}/people/${encodeURIComponent(person.id)}/faces`)).json();
    $("#person-faces").replaceChildren(el("h3", { text: `Faces of ${person.name || person.id}` }), ...faces.map((face) => {
      const move = el("form", { class: "move-form" },
        el("select", { name: "person" }, el("option", { value: "", text: "nobody" }),
          ...people.filter((other) => other.id !== person.id)
            .map((other) => el("option", { value: other.id, text: other.name || other.id }))),
        el("button", { type: "submit", class: "secondary", text: "Move to" }));
      move.addEventListener("submit", (event) => {
        event.preventDefault();
        api(`collections/${encodeURIComponent(collection)}/faces/${encodeURIComponent(face.id)}/person`, {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ person: move.person.value || null }),
        }).then(() => showPeople(), failed(message));
      });
      return el("article", { class: "face-card", "data-face": face.id }, faceImage(collection, face.id),
        el("div", { class: "copy", text: face.path }), allows("ingest") ? move : null);
    }));
  } catch (error) {
    failed(message)(error);
  }
}

// --- similar photos ------------------------------------------------------------------------------

async function findSimilar(event) {
  event.preventDefault();
  const form = event.target;
  const message = $("#similar-message");
  const collection = form.collection.value;
  say(message, "Comparing every photo with every other…");
  try {
    const params = new URLSearchParams({ threshold: form.threshold.value || "0.95" });
    const answer = await api(`collections/${encodeURIComponent(collection)}/similar?${params}`);
    const found = answer.status === 202 ? await similarJob((await answer.json()).job_id, message) : await answer.json();
    say(message, `${found.exact.length} photo(s) stored at several paths; ${found.near.length} group(s) of `
      + `near-duplicates at cosine ≥ ${found.threshold} in ${collection}`
      + (found.truncated ? " (made of the closest pairs only: there were more; raise the threshold)" : ""));
    $("#similar-groups").replaceChildren(
      ...found.exact.map((member) => el("article", { class: "group exact", "data-id": member.id },
        el("h3", { text: `Exact copies (${member.paths.length} paths)` }),
        thumbnail(collection, member.id),
        ...member.paths.map((path) => el("div", { class: "copy", text: path })))),
      ...found.near.map((group, number) => el("article", { class: "group near" },
        el("h3", { text: `Near-duplicates ${number + 1}: ${group.members.length} photos, cosine `
          + `${group.scores.at(-1).score.toFixed(3)}–${group.scores[0].score.toFixed(3)}` }),
        el("div", { class: "members" }, ...group.members.map((member) => el("div", { class: "member", "data-id": member.id },
          thumbnail(collection, member.id), el("div", { class: "filename", text: member.path })))))));
  } catch (error) {
    failed(message)(error);
  }
}

// A large collection's comparison runs as a Ray job: followed until it ends, then its groups.
async function similarJob(jobId, message) {
  for (;;) {
    const status = await (await api(`ingest/${encodeURIComponent(jobId)}`)).json();
    if (status.status === "SUCCEEDED" && status.similar) return status.similar;
    if (["FAILED", "STOPPED"].includes(status.status)) throw new Error(status.message || `job ${jobId} ${status.status}`);
    say(message, `Comparing every photo with every other, as Ray job ${jobId} (${status.status})…`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function thumbnail(collection, id) {
  const image = el("img", { alt: id, width: THUMBNAIL_SIZE / 2, height: THUMBNAIL_SIZE / 2 });
  const figure = el("figure", { class: "thumb" }, image);
  loadThumbnail(collection, id, image, figure);
  return figure;
}

// --- start -------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", signIn);
  $("#forget").addEventListener("click", () => signOut());
  $("#refresh").addEventListener("click", loadCollections);
  $("#ingest-form").addEventListener("submit", startIngestion);
  $("#upload-form").addEventListener("submit", uploadPhotos);
  $("#search-form").addEventListener("submit", search);
  $("#similar-form").addEventListener("submit", findSimilar);
  $("#people-form").addEventListener("submit", showPeople);
  $("#create-form").addEventListener("submit", createCollection);
  $("#viewer-previous").addEventListener("click", () => stepLarge(-1));
  $("#viewer-next").addEventListener("click", () => stepLarge(1));
  $("#viewer-close").addEventListener("click", () => $("#viewer").close());
  $("#search-form select[name=collection]").addEventListener("change", (event) => loadPeople(event.target.value));
  $("#previous-page").addEventListener("click", () => showPage(Math.max(0, state.offset - state.query.k)));
  $("#next-page").addEventListener("click", () => showPage(state.offset + state.query.k));
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else signOut();
});
