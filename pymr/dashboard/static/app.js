// pymr dashboard: draws the snapshots that /api/stream sends (server-sent events).
// Every name and message comes from the nodes: it goes into the page as text
// (text nodes, textContent), never as markup.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const openErrors = new Set();   // tracebacks the reader opened stay open across updates

  // ------------------------------------------------------------ helpers
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, String(v));
      else e[k] = v;   // value, max, title, open: properties, never markup
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : String(c));   // a string becomes a text node
    }
    return e;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "?";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }

  function duration(s) {
    if (s === null || s === undefined) return "-";
    if (s < 60) return s.toFixed(1) + " s";
    s = Math.round(s);
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], {hour12: false});
  }

  function pct(f) { return Math.round(f * 100) + "%"; }

  function meter(fraction, text, hot) {
    const fill = el("span");
    fill.style.width = Math.max(0, Math.min(100, fraction * 100)).toFixed(1) + "%";
    return el("span", {}, el("span", {class: "meter" + (hot ? " hot" : "")}, fill), text);
  }

  function badge(state) {
    return el("span", {class: "badge state-" + state}, state);
  }

  function replace(parent, children, empty) {
    parent.replaceChildren(...(children.length ? children : [el("p", {class: "empty"}, empty)]));
  }

  // ------------------------------------------------------------ nodes
  function nodeRow(n) {
    const cpu = n.cpu_percent === null ? "-" :
      meter(n.cpu_percent / 100, n.cpu_percent.toFixed(0) + "%", n.cpu_percent > 80);
    const mem = n.mem_total === null ? "-" :
      meter(n.mem_percent / 100, bytes(n.mem_used) + " of " + bytes(n.mem_total),
            n.mem_percent > 85);
    const slots = n.slots ? meter(n.busy / n.slots, n.busy + " of " + n.slots, false) : "-";
    const state = el("td", {}, badge(n.state));
    if (n.error) state.append(el("span", {class: "sub"}, n.error));
    return el("tr", {"data-node-id": n.node_id, "data-state": n.state},
      el("td", {}, el("b", {class: "node-name"}, n.name), el("span", {class: "sub mono"}, n.node_id)),
      el("td", {class: "mono"}, (n.addresses.length ? n.addresses : [n.endpoint]).join(", ")),
      el("td", {}, n.version || "-"),
      el("td", {}, slots),
      el("td", {class: "num"}, n.tasks_done.toLocaleString()),
      el("td", {class: "num"}, bytes(n.bytes_processed)),
      el("td", {}, cpu),
      el("td", {}, mem),
      el("td", {class: "num"}, duration(n.uptime_s)),
      state);
  }

  function drawNodes(nodes) {
    document.querySelector("#nodes tbody").replaceChildren(...nodes.map(nodeRow));
    document.getElementById("no-nodes").hidden = nodes.length > 0;
  }

  // ------------------------------------------------------------ jobs
  function chart(points, job) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", "0 0 300 80");
    svg.setAttribute("preserveAspectRatio", "none");
    const average = job.elapsed_s ? job.bytes_done / job.elapsed_s : 0;
    if (points.length < 2) {
      return {svg: svg, label: job.state === "running" ? "throughput: measuring..." :
              "throughput: " + bytes(average) + "/s on average"};
    }
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const top = Math.max(...points.map(p => p[1]), 1);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.map(p =>
      ((p[0] - t0) / Math.max(t1 - t0, 1e-9) * 300).toFixed(1) + "," +
      (78 - p[1] / top * 74).toFixed(1)).join(" "));
    svg.append(line);
    const now = job.state === "running" ? bytes(points[points.length - 1][1]) + "/s now"
                                        : bytes(average) + "/s on average";
    return {svg: svg, label: "throughput: " + now + ", peak " + bytes(top) + "/s"};
  }

  function phaseRow(name, ph, unit) {
    const total = ph.total === null ? "?" : ph.total.toLocaleString();
    return el("tr", {"data-phase": name},
      el("td", {}, name),
      el("td", {}, el("progress", {max: 1, value: ph.fraction})),
      el("td", {class: "num"}, ph.done.toLocaleString() + " of " + total + " " + unit));
  }

  function jobCard(j) {
    const ph = j.phases;
    const stats = el("div", {class: "stats"},
      "splits ", el("b", {class: "splits"}, j.tasks_done + " of " +
                    (j.tasks_total === null ? "?" : j.tasks_total)),
      " \u00b7 ", el("b", {}, bytes(j.bytes_done) + " of " + bytes(j.bytes_total)), el("br"),
      "elapsed ", el("b", {}, duration(j.elapsed_s)),
      " \u00b7 left ", el("b", {}, j.eta_s === null ? "-" : "~" + duration(j.eta_s)), el("br"),
      "retries ", el("b", {}, j.retries), " \u00b7 backups ", el("b", {}, j.backups),
      " \u00b7 lost nodes ", el("b", {}, j.nodes_lost.length ? j.nodes_lost.join(", ") : "none"),
      el("br"), "nodes ", el("b", {}, j.nodes.length ? j.nodes.join(", ") : "-"));
    const c = chart(j.throughput, j);
    return el("article", {class: "job", "data-job-id": j.job_id, "data-job-name": j.name,
                          "data-state": j.state, "data-progress": j.progress},
      el("div", {class: "job-head"}, el("b", {}, j.name || "(job)"),
         el("code", {}, j.job_id), badge(j.state),
         el("span", {class: "muted"}, j.state === "running" ? "phase: " + j.phase : ""),
         el("span", {class: "muted inputs"}, j.inputs.length ? "inputs: " + j.inputs.join(", ") : "")),
      el("div", {},
        el("div", {class: "overall"}, el("progress", {max: 1, value: j.progress}),
           el("span", {class: "pct"}, pct(j.progress))),
        el("table", {class: "phases"},
          phaseRow("map", ph.map, "splits"), phaseRow("shuffle", ph.shuffle, "splits"),
          phaseRow("reduce", ph.reduce, "partitions"), phaseRow("fetch", ph.fetch, "chunks"))),
      el("div", {}, c.svg, el("div", {class: "chart-label"}, c.label), stats),
      j.error ? el("div", {class: "job-error"}, "failed: " + j.error) : null);
  }

  function drawJobs(jobs) {
    replace(document.getElementById("jobs"), jobs.map(jobCard), "No job seen yet.");
  }

  // ------------------------------------------------------------ errors and events
  function errorItem(e) {
    const key = [e.job_id, e.task_id, e.attempt].join("/");
    const where = e.where ? " at " + e.where : "";
    const d = el("details", {class: "error", open: openErrors.has(key), "data-key": key},
      el("summary", {},
        el("span", {class: "muted"}, clock(e.time) + " "),
        el("span", {class: "what"}, (e.exc_type || "error") + ": " + e.message),
        el("span", {class: "sub"}, "node " + (e.node || "?") + " \u00b7 job " +
           (e.job_name || e.job_id) + " \u00b7 task " + e.task_id + " attempt " + e.attempt + where)),
      el("pre", {}, e.traceback || "(no traceback)"));
    d.addEventListener("toggle", () => { d.open ? openErrors.add(key) : openErrors.delete(key); });
    return d;
  }

  function drawEvents(events, errors) {
    replace(document.getElementById("errors"), errors.map(errorItem), "No error.");
    document.getElementById("events").replaceChildren(...events.map(ev =>
      el("li", {class: "kind-" + ev.kind}, el("time", {}, clock(ev.time)),
         ev.node ? el("span", {class: "node"}, ev.node) : null, ev.text)));
  }

  // ------------------------------------------------------------ cluster and connection
  function banner(text, info) {
    const b = document.getElementById("banner");
    b.hidden = !text;
    b.className = "banner" + (info ? " info" : "");
    b.textContent = text || "";
  }

  let serverUp = false;
  let lastCluster = null;

  function drawCluster(c) {
    lastCluster = c;
    document.getElementById("title").textContent = c.title;
    document.title = c.title + " dashboard";
    document.getElementById("summary").textContent =
      "cluster " + c.fingerprint + " \u00b7 " + c.nodes_up + " of " + c.nodes +
      " node(s) up, " + c.busy + " busy";
    if (!serverUp) banner("The dashboard server does not answer (it stopped, or the " +
                          "network is down); retrying...", false);
    else if (c.reachable === false) banner(c.text, false);
    else if (c.reachable === null) banner(c.text, true);
    else banner("", false);
  }

  function live(state) {
    const b = document.getElementById("live");
    b.className = "badge state-" + state;
    b.textContent = state;
  }

  function connect() {
    const source = new EventSource("/api/stream");
    source.addEventListener("state", (msg) => {
      const snap = JSON.parse(msg.data);
      serverUp = true;
      live("live");
      drawCluster(snap.cluster);
      drawNodes(snap.nodes);
      drawJobs(snap.jobs);
      drawEvents(snap.events, snap.errors);
    });
    source.onerror = () => {
      serverUp = false;
      live("offline");
      if (lastCluster) drawCluster(lastCluster);
      else banner("The dashboard server does not answer (it stopped, or the network is " +
                  "down); retrying...", false);
    };
  }

  connect();
})();
