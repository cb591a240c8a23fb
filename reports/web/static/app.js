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
  const layout = Object.assign({}, fig.layout, { autosize: true });
  await Plotly.react(div, fig.data, layout, { responsive: true, displaylogo: false });
  return fig;
}

function plotInline(div, fig) {
  return Plotly.newPlot(div, fig.data, Object.assign({}, fig.layout, { autosize: true }), { responsive: true, displaylogo: false });
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

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 1e5) return v.toPrecision(3);
  if (digits !== undefined) return v.toFixed(digits);
  return Number.isInteger(v) ? String(v) : v.toPrecision(4);
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
