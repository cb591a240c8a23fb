// The study page's all-trials table: filtered, sorted and paged on the server, linked both
// ways with the Pareto plot (a box/lasso selection filters the table; the table's filters
// highlight their trials on the plot), every setting kept in the URL so a view can be shared.
"use strict";

const PAGE_SIZE = 50;

// [2,3,4,9,12,13] <-> "2-4,9,12-13": short enough for a URL even for hundreds of trials.
function encodeTrials(list) {
  const v = Array.from(new Set(list)).sort((a, b) => a - b), parts = [];
  for (let i = 0; i < v.length; i++) {
    let j = i;
    while (j + 1 < v.length && v[j + 1] === v[j] + 1) j++;
    parts.push(j > i ? v[i] + "-" + v[j] : String(v[i]));
    i = j;
  }
  return parts.join(",");
}
function decodeTrials(text) {
  const out = [];
  text.split(",").filter(Boolean).forEach(p => {
    const [a, b] = p.split("-").map(Number);
    for (let t = a; t <= (b === undefined ? a : b); t++) out.push(t);
  });
  return out;
}

function readViewState() {
  const q = new URLSearchParams(location.search);
  return {
    x: q.get("x"), y: q.get("y"),
    fid: q.getAll("fid"), feas: q.get("feas") || "any", front: q.get("front") === "1",
    ranges: q.getAll("r").map(r => { const p = r.split(":"); const max = p.pop(), min = p.pop(); return { column: p.join(":"), min: min, max: max }; }),
    sel: q.get("sel") !== null ? decodeTrials(q.get("sel")) : null,
    sort: q.get("sort") || "trial", desc: q.get("desc") === "1", offset: Number(q.get("page") || 0) * PAGE_SIZE,
  };
}

function writeViewState(s) {
  const q = new URLSearchParams();
  if (s.x) q.set("x", s.x);
  if (s.y) q.set("y", s.y);
  s.fid.forEach(f => q.append("fid", f));
  if (s.feas !== "any") q.set("feas", s.feas);
  if (s.front) q.set("front", "1");
  s.ranges.filter(r => r.min !== "" || r.max !== "").forEach(r => q.append("r", r.column + ":" + r.min + ":" + r.max));
  if (s.sel) q.set("sel", encodeTrials(s.sel));
  if (s.sort !== "trial") q.set("sort", s.sort);
  if (s.desc) q.set("desc", "1");
  if (s.offset) q.set("page", String(Math.floor(s.offset / PAGE_SIZE)));
  const text = q.toString();
  history.replaceState(null, "", location.pathname + (text ? "?" + text : ""));
}

function trialsQuery(s, paged) {
  const q = new URLSearchParams();
  s.fid.forEach(f => q.append("fidelity", f));
  q.set("feasible", s.feas);
  if (s.front && s.x && s.y) { q.set("front_x", s.x); q.set("front_y", s.y); }
  s.ranges.filter(r => r.min !== "" || r.max !== "").forEach(r => q.append("range", r.column + ":" + r.min + ":" + r.max));
  if (s.sel) q.set("trials", encodeTrials(s.sel));
  q.set("sort", s.sort);
  if (s.desc) q.set("desc", "true");
  if (paged) { q.set("offset", String(s.offset)); q.set("limit", String(PAGE_SIZE)); }
  return q.toString();
}

function filtersActive(s) {
  return s.fid.length > 0 || s.feas !== "any" || s.front || s.sel !== null || s.ranges.some(r => r.min !== "" || r.max !== "");
}

// opts: study, base (API base), plot (the Pareto div), z, confirmed, costs, shape, state (readViewState())
function initTrialsTable(opts) {
  const s = opts.state;
  const root = document.getElementById("trials-card");
  const table = document.getElementById("trials-table"), body = table.tBodies[0];
  const fidSel = document.getElementById("f-fidelity"), feasSel = document.getElementById("f-feasible");
  const frontBox = document.getElementById("f-front"), rangesDiv = document.getElementById("f-ranges");
  fidSel.value = s.fid[0] || "";
  feasSel.value = s.feas;
  frontBox.checked = s.front;
  s.ranges.forEach(r => addRange(r));

  function addRange(r) {
    const row = document.getElementById("range-template").content.firstElementChild.cloneNode(true);
    if (r) { row.querySelector(".r-col").value = r.column; row.querySelector(".r-min").value = r.min; row.querySelector(".r-max").value = r.max; }
    rangesDiv.appendChild(row);
  }
  function readRanges() {
    return Array.from(rangesDiv.querySelectorAll(".range-row")).map(row => ({
      column: row.querySelector(".r-col").value, min: row.querySelector(".r-min").value.trim(), max: row.querySelector(".r-max").value.trim() }));
  }
  document.getElementById("add-range").addEventListener("click", () => addRange(null));
  rangesDiv.addEventListener("click", ev => { if (ev.target.classList.contains("remove-range")) { ev.target.closest(".range-row").remove(); changed(); } });
  rangesDiv.addEventListener("change", changed);
  [fidSel, feasSel, frontBox].forEach(el => el.addEventListener("change", changed));
  document.getElementById("clear-selection").addEventListener("click", () => { s.sel = null; changed(); });
  table.tHead.addEventListener("click", ev => {
    const th = ev.target.closest("th[data-sort]");
    if (!th) return;
    if (s.sort === th.dataset.sort) s.desc = !s.desc; else { s.sort = th.dataset.sort; s.desc = th.dataset.sort !== "trial" && th.dataset.sort !== "params"; }
    s.offset = 0;
    load();
  });
  document.getElementById("page-prev").addEventListener("click", () => { s.offset = Math.max(0, s.offset - PAGE_SIZE); load(); });
  document.getElementById("page-next").addEventListener("click", () => { s.offset += PAGE_SIZE; load(); });

  function changed() {
    s.fid = fidSel.value ? [fidSel.value] : [];
    s.feas = feasSel.value;
    s.front = frontBox.checked;
    s.ranges = readRanges();
    s.offset = 0;
    return load();
  }

  function rowHTML(r) {
    const link = "/studies/" + encodeURIComponent(opts.study) + "/trials/" + r.trial;
    return '<tr data-trial="' + r.trial + '"><td><a class="trial-link" href="' + link + '">#' + r.trial + "</a></td>" +
      "<td class='l'>" + esc(r.fidelity || "–") + "</td><td class='l'>" + (r.feasible ? "yes" : "<span class='err'>no</span>") + "</td>" +
      "<td class='l'>" + glanceSVG(r, opts.shape.n_layer, opts.shape.d_ff) + " <span class='mono'>" + esc(r.summary) + "</span></td>" +
      "<td>" + numHTML("accuracy", r.accuracy, r.accuracy_stderr, opts.z) + "</td>" +
      (opts.confirmed ? "<td>" + numHTML("accuracy", r.accuracy_confirmed, r.accuracy_confirmed_stderr, opts.z) + "</td>" : "") +
      "<td class='l'>" + (r.on_front ? "front" : "") + (r.tied ? " tied" : "") + "</td>" +
      opts.costs.map(c => "<td>" + numHTML(c, r.costs[c]) + "</td>").join("") + "</tr>";
  }

  async function load() {
    s.x = opts.x(); s.y = opts.y();
    writeViewState(s);
    const query = trialsQuery(s, true);
    document.getElementById("trials-csv").href = opts.base + "/trials.csv?" + trialsQuery(s, false);
    let page;
    try { page = await fetchJSON(opts.base + "/trials?" + query); }
    catch (e) { document.getElementById("trials-info").innerHTML = '<span class="err">' + esc(e.message) + "</span>"; return; }
    if (page.total && s.offset >= page.total) { s.offset = Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE; return load(); }
    body.innerHTML = page.trials.map(rowHTML).join("");
    table.tHead.querySelectorAll("th[data-sort]").forEach(th => {
      th.classList.toggle("sorted-asc", th.dataset.sort === s.sort && !s.desc);
      th.classList.toggle("sorted-desc", th.dataset.sort === s.sort && s.desc);
    });
    const first = page.total ? s.offset + 1 : 0, last = Math.min(s.offset + PAGE_SIZE, page.total);
    document.getElementById("trials-info").textContent = "rows " + first + "–" + last + " of " + page.total +
      (filtersActive(s) ? " matching" : "") + " (" + opts.nTrials() + " trials)";
    document.getElementById("page-prev").disabled = s.offset === 0;
    document.getElementById("page-next").disabled = last >= page.total;
    const selInfo = document.getElementById("selection-info");
    selInfo.hidden = s.sel === null;
    if (s.sel !== null) document.getElementById("selection-count").textContent = s.sel.length;
    const cmp = document.getElementById("compare-selected");
    const chosen = s.sel !== null ? s.sel : [];
    cmp.hidden = chosen.length < 2 || chosen.length > 4;
    cmp.href = "/studies/" + encodeURIComponent(opts.study) + "/compare?trials=" + chosen.join(",");
    root.dataset.total = String(page.total);
    root.dataset.ready = "1";
    highlight(filtersActive(s) ? new Set(page.matching) : null);
  }

  // The table's filters -> the plot: matching trials stay bright, the others fade.
  function highlight(keep) {
    const div = opts.plot;
    if (!div.data) return;
    const traces = [], selected = [];
    div.data.forEach((t, i) => {
      if (t.mode !== "markers" || !t.customdata) return;
      traces.push(i);
      selected.push(keep === null ? null : t.customdata.map((c, j) => keep.has(c) ? j : -1).filter(j => j >= 0));
    });
    if (traces.length) Plotly.restyle(div, { selectedpoints: selected }, traces);
  }

  // The plot's box or lasso selection -> the table.
  function listen() {
    opts.plot.on("plotly_selected", ev => {
      if (!ev || !ev.points) return;
      const picked = Array.from(new Set(ev.points.map(p => p.customdata).filter(c => c !== undefined && c !== null)));
      s.sel = picked.length ? picked : null;
      s.offset = 0;
      load();
    });
    opts.plot.on("plotly_deselect", () => { s.sel = null; s.offset = 0; load(); });
  }

  return { load: load, listen: listen, highlight: () => load() };
}
