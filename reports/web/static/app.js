// Shared helpers of the NAS web pages (no build step, no external resources).
"use strict";

async function fetchJSON(url, options) {
  const res = await fetch(url, options);
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { detail: text }; }
  if (!res.ok) {
    let detail = body && body.detail !== undefined ? body.detail : res.statusText;
    if (Array.isArray(detail)) detail = detail.map(d => (d.loc || []).join(".") + ": " + d.msg).join("; ");
    const err = new Error(String(detail));
    err.status = res.status;
    throw err;
  }
  return body;
}

async function plotFigure(div, url) {
  const fig = await fetchJSON(url);
  await plotData(div, fig);
  return fig;
}

// The pages load plotly.js's basic bundle (scatter, bar, pie) when the server has it; a figure
// with another trace type (parcoords, scatter3d) draws with the full bundle, fetched once on
// demand. The page's global Plotly stays the basic one, so later calls on a div drawn by it
// (restyle, react) keep using the instance that drew it.
let fullPlotly = null;
function plotlyFor(data) {
  const cfg = window.NAS_PLOTLY || {};
  const basic = new Set(cfg.basic || []);
  if (!cfg.full || (data || []).every(t => basic.has(t.type || "scatter"))) return window.Plotly;
  if (!fullPlotly) {
    fullPlotly = new Promise((resolve, reject) => {
      const page = window.Plotly;
      const script = document.createElement("script");
      script.src = cfg.full;
      script.onload = () => { const full = window.Plotly; window.Plotly = page; resolve(full); };
      script.onerror = () => { fullPlotly = null; reject(new Error("could not load " + cfg.full)); };
      document.head.appendChild(script);
    });
  }
  return fullPlotly;
}

// Draw with the instance the traces need: synchronously when the page's bundle draws them
// (so a caller may attach div.on(...) at once), after loading the full bundle otherwise.
function drawWith(data, draw) {
  const lib = plotlyFor(data);
  return lib instanceof Promise ? lib.then(draw) : draw(lib);
}

function plotData(div, fig) {
  const layout = Object.assign({}, fig.layout, { autosize: true });
  return drawWith(fig.data, P => P.react(div, fig.data, layout, { responsive: true, displaylogo: false }));
}

// Hovering a point fetches its row (the figure carries only trial numbers and coordinates).
function showPointDetails(div, study, panel) {
  const seen = new Map();
  div.on("plotly_hover", async ev => {
    const p = ev.points && ev.points[0];
    if (!p || p.customdata === undefined || p.customdata === null) return;
    const trial = p.customdata;
    if (!seen.has(trial)) {
      seen.set(trial, fetchJSON("/api/studies/" + encodeURIComponent(study) + "/trials/" + trial + "/brief").catch(() => null));
    }
    const r = await seen.get(trial);
    if (!r) return;
    panel.innerHTML = briefHTML(r);
    panel.dataset.trial = String(trial);
  });
}

function briefHTML(r) {
  const lines = ["<b>trial " + r.trial + "</b>", '<span class="mono">' + esc(r.summary) + "</span>", glanceSVG(r)];
  const status = [r.feasible ? null : "infeasible", r.fidelity ? "fidelity " + esc(r.fidelity) : null,
                  r.on_front ? "on the study front" : null, r.tied ? "tied with the best" : null].filter(Boolean);
  if (status.length) lines.push(status.join(", "));
  lines.push("accuracy " + fmtCell("accuracy", r.accuracy, r.accuracy_stderr));
  if (r.accuracy_confirmed !== null) lines.push("confirmed " + fmtCell("accuracy", r.accuracy_confirmed, r.accuracy_confirmed_stderr));
  Object.keys(r.costs).forEach(c => lines.push(esc(c) + " " + fmtCell(c, r.costs[c])));
  return lines.join("<br>");
}

function plotInline(div, fig) {
  const layout = Object.assign({}, fig.layout, { autosize: true });
  return drawWith(fig.data, P => P.newPlot(div, fig.data, layout, { responsive: true, displaylogo: false }));
}

// Click a marker whose customdata is a trial number -> its candidate page.
function linkPointsToTrials(div, study) {
  div.on("plotly_click", ev => {
    const p = ev.points && ev.points[0];
    if (p && p.customdata !== undefined && p.customdata !== null) {
      window.location.href = "/studies/" + encodeURIComponent(study) + "/trials/" + p.customdata;
    }
  });
}

// Sort a table by clicking its <th class="sortable">; cells may carry data-v (numeric value).
function makeSortable(table) {
  const heads = table.querySelectorAll("th.sortable");
  heads.forEach((th, idx) => {
    th.addEventListener("click", () => {
      const col = Array.from(th.parentNode.children).indexOf(th);
      const asc = !th.classList.contains("sorted-asc");
      heads.forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      const key = r => {
        const cell = r.children[col];
        const v = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
        const n = parseFloat(v);
        return isNaN(n) ? v : n;
      };
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (typeof x === "number" && typeof y === "number") return asc ? x - y : y - x;
        return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
      });
      rows.forEach(r => body.appendChild(r));
    });
  });
}

// One number renderer, the twin of reports/numbers.py (tests check both agree in Chromium):
// scores 0.5123, counts 75.1 M, FLOPs 190 MFLOP, bytes 12.3 MB, 12.3 ms; the raw value on hover.
const SI_PREFIXES = ["", " k", " M", " G", " T", " P"];
const UNIT_SUFFIX = { count: "", flop: "FLOP", bytes: "B", rate: "/s", plain: "" };

function numUnit(column) {
  const name = String(column || "").replace(/_stderr$/, "").split("@")[0];
  if (name === "accuracy" || name.includes("/")) return "score";
  if (name.endsWith("_ms")) return "ms";
  if (name.includes("flop")) return "flop";
  if (name.endsWith("_bytes") || name === "memory") return "bytes";
  if (name.endsWith("_per_s")) return "rate";
  if (name.endsWith("params") || name === "n_trials" || name === "n_examples") return "count";
  return "plain";
}

function finiteOrNull(v) {
  if (v === null || v === undefined || v === "") return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

function sig3(v) { return String(Number(v.toPrecision(3))); }

function siText(v, suffix) {
  const sign = v < 0 ? "-" : "";
  const r = Number(Math.abs(v).toPrecision(3));
  const group = r < 1000 ? 0 : Math.min(SI_PREFIXES.length - 1, Math.floor(Math.log10(r) / 3));
  const mantissa = sig3(r / Math.pow(10, 3 * group));
  if (group) return sign + mantissa + SI_PREFIXES[group] + suffix;
  return suffix ? sign + mantissa + " " + suffix : sign + mantissa;
}

function fmtValue(column, value) {
  const v = finiteOrNull(value);
  if (v === null) return "–";
  const kind = numUnit(column);
  if (kind === "score") return v.toFixed(4);
  if (kind === "ms") return Math.abs(v) < 1e4 ? sig3(v) + " ms" : sig3(v / 1e3) + " s";
  if (kind === "plain") {
    if (Math.abs(v) >= 1e4) return siText(v, "");
    return Number.isInteger(v) ? String(v) : sig3(v);
  }
  return siText(v, UNIT_SUFFIX[kind]);
}

function rawValue(value) {
  const v = finiteOrNull(value);
  if (v === null) return "";
  return String(v);
}

// The markup of reports.numbers.cell_html: the value, its raw form on hover, ± z·stderr.
function numHTML(column, value, stderr, z) {
  let text = '<span class="num" title="' + esc(rawValue(value)) + '">' + esc(fmtValue(column, value)) + "</span>";
  const se = finiteOrNull(stderr), v = finiteOrNull(value);
  if (se !== null && se > 0 && v !== null) text += ' <small class="pm">± ' + ((z === undefined ? 1 : z) * se).toFixed(4) + "</small>";
  return text;
}

function fmtCell(column, value, stderr, z) { return numHTML(column, value, stderr, z); }

// "50M", "1.5 G", "50e6", "50 k", "50000000" -> a number (null when it is none).
function parseHuman(text) {
  const m = String(text).trim().replace(/,/g, "").match(/^(-?[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([kKMGTP]?)[A-Za-z/]*$/);
  if (!m) return null;
  const scale = { "": 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 }[m[2]];
  const v = Number(m[1]) * scale;
  return Number.isFinite(v) ? v : null;
}

// Kept for older callers: digits forces a fixed number of decimals.
function fmt(v, digits) {
  if (finiteOrNull(v) === null) return "–";
  return digits !== undefined && Math.abs(v) < 1e4 ? Number(v).toFixed(digits) : fmtValue("", v);
}

// A per-layer glance: one bar per supernet layer, its height the kept FFN width (0: dropped).
function glanceSVG(r, fullLayers, fullDff) {
  const layers = r.layers || [], dff = r.d_ff || [];
  const n = fullLayers || (layers.length ? Math.max.apply(null, layers) + 1 : 0);
  if (!n) return "";
  const top = fullDff || Math.max.apply(null, dff.concat([1]));
  const w = 3, h = 16, kept = new Map(layers.map((l, i) => [l, dff[i] || 0]));
  let bars = "";
  for (let i = 0; i < n; i++) {
    const v = kept.has(i) ? kept.get(i) : 0, bh = Math.max(v > 0 ? 1 : 0, Math.round(h * v / top));
    bars += kept.has(i) ? '<rect x="' + i * w + '" y="' + (h - bh) + '" width="' + (w - 1) + '" height="' + bh + '"></rect>'
                        : '<rect class="dropped" x="' + i * w + '" y="' + (h - 1) + '" width="' + (w - 1) + '" height="1"></rect>';
  }
  return '<svg class="glance" width="' + n * w + '" height="' + h + '" role="img"><title>FFN width kept per layer</title>' + bars + "</svg>";
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// The API token for mutating calls: kept in this tab's sessionStorage only.
function apiToken(input) {
  if (input && input.value) { sessionStorage.setItem("nasToken", input.value); return input.value; }
  return sessionStorage.getItem("nasToken") || "";
}

async function startExport(study, trial, out, verify, tokenInput, statusEl) {
  const token = apiToken(tokenInput);
  if (!token) { statusEl.innerHTML = '<span class="err">enter the server\'s API token (NAS_API_TOKEN, printed by `nas serve`)</span>'; return; }
  statusEl.textContent = "starting export…";
  try {
    const target = await fetchJSON("/api/exports/target?out=" + encodeURIComponent(out), { headers: { "Authorization": "Bearer " + token } });
    if (!target.free) {
      statusEl.innerHTML = '<span class="err">' + esc(target.problem) + "</span>" + (target.replaceable
        ? " — replace it from the pick page's export panel (overwrite), or choose another name" : "");
      return;
    }
    const res = await fetchJSON("/api/exports", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token },
      body: JSON.stringify({ study: study, trial: trial, out: out, verify: verify }),
    });
    pollJob(res.job.id, statusEl, "export of trial " + trial + " to exports/" + res.out, token);
  } catch (e) {
    statusEl.innerHTML = '<span class="err">' + esc(e.message) + "</span>";
  }
}

// Job status and logs need the token too (logs show paths and commands).
function pollJob(id, statusEl, what, token) {
  const tick = async () => {
    try {
      const job = await fetchJSON("/api/jobs/" + id, { headers: { "Authorization": "Bearer " + token } });
      if (job.status === "running") {
        statusEl.textContent = what + ": running…";
        setTimeout(tick, 1500);
      } else {
        const cls = job.status === "succeeded" ? "ok" : "err";
        statusEl.innerHTML = '<span class="' + cls + '">' + esc(what) + ": " + job.status + "</span>" +
          '<pre class="log">' + esc(job.log_tail.slice(-1500)) + "</pre>";
      }
    } catch (e) {
      statusEl.innerHTML = '<span class="err">' + esc(e.message) + "</span>";
    }
  };
  tick();
}
