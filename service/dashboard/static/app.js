// breakerd dashboard: a live view over GET /events (SSE), with admin actions.
//
// Data flow: the stream's `metrics` events carry every breaker's snapshot (on connect and then
// every events_interval); `state_changed` events arrive as they happen.  A state change is
// shown at once and triggers one throttled GET /breakers for the exact numbers (countdown,
// counters); there is no per-breaker polling.  When the stream breaks, the page reconnects with
// backoff and the snapshot sent on connect resyncs everything.
//
// Rendering is batched: events only mark cards dirty, and one requestAnimationFrame callback
// repaints at most BATCH cards per frame, so an event storm over 500 breakers never freezes the
// tab.  Breaker names are data: they only ever reach the DOM through textContent.
"use strict";

(() => {
  const SAMPLES = 60; // sparkline points (one per metrics event)
  const TIMELINE = 50; // transitions kept
  const BATCH = 150; // cards repainted per animation frame
  const RESYNC_EVERY = 1000; // ms: at most one GET /breakers this often after state changes
  const MAX_RETRY = 5000; // ms: reconnect backoff cap
  const TOKEN_KEY = "breakerd.adminToken";
  const STATE_TEXT = { closed: "CLOSED", open: "OPEN", half_open: "HALF-OPEN" };
  const RANK = { open: 0, half_open: 1, closed: 2 };
  const OUTCOMES = [
    ["success", "successful_calls", "ok"],
    ["failure", "failed_calls", "failed"],
    ["ignored", "ignored_calls", "ignored"],
    ["rejected", "rejected_calls", "rejected"],
  ];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const cards = $("cards");
  const template = $("card-template");

  /** name -> {name, snap, at (ms, when snap was received), last, samples, el, parts} */
  const breakers = new Map();
  const dirty = new Set();
  const pendingTimeline = [];
  let policies = new Map(); // a Map: breaker names are data, never object keys
  let adminEnabled = false;
  let frame = 0;
  let orderDirty = true;
  let order = [];
  let source = null;
  let retryDelay = 1000;
  let reconnectTimer = 0;
  let resyncTimer = 0;
  let lastResync = 0;
  let policiesTimer = 0;
  let statusTimer = 0;
  let lastStatus = 0;
  let filterText = "";

  // -- formatting ------------------------------------------------------------------------------

  const pct = (x) => (x == null ? "n/a" : `${(x * 100).toFixed(x > 0 && x < 0.1 ? 1 : 0)}%`);
  const duration = (s) => {
    if (s == null) return "n/a";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    return `${s.toFixed(2)} s`;
  };
  const span = (s) => {
    if (s == null || !Number.isFinite(s)) return "n/a";
    s = Math.max(0, s);
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${Math.floor(s % 60)}s`;
    return `${Math.floor(m / 60)}h ${m % 60}m`;
  };
  const clock = (epoch) => new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
  const rate = (x) => (x >= 10 ? x.toFixed(0) : x.toFixed(1));

  // -- breakers ----------------------------------------------------------------------------------

  function entry(name) {
    let e = breakers.get(name);
    if (e) return e;
    const el = template.content.firstElementChild.cloneNode(true);
    el.dataset.name = name;
    const q = (sel) => el.querySelector(sel);
    const parts = {
      name: q(".name"),
      state: q(".state"),
      forced: q(".forced"),
      inState: q(".in-state"),
      rowProbe: q(".row-probe"),
      probe: q(".probe"),
      consecutive: q(".consecutive"),
      rate: q(".rate"),
      calls: q(".calls"),
      latency: q(".latency"),
      probes: q(".probes"),
      rowCooldown: q(".row-cooldown"),
      cooldown: q(".cooldown"),
      svg: q(".sparkline"),
      lines: Object.fromEntries(OUTCOMES.map(([k]) => [k, q(`.line-${k}`)])),
      legend: q(".legend"),
      actions: q(".actions"),
    };
    parts.name.textContent = name;
    parts.svg.setAttribute("aria-label", `calls per second by outcome for ${name}`);
    for (const button of parts.actions.querySelectorAll("button")) {
      button.setAttribute("aria-label", `${button.textContent} ${name}`);
    }
    e = { name, snap: null, at: 0, last: null, samples: [], cooldown: null, el, parts };
    breakers.set(name, e);
    cards.append(el);
    orderDirty = true;
    if (!policies.has(name)) schedulePolicies();
    return e;
  }

  function remove(name) {
    const e = breakers.get(name);
    if (!e) return;
    e.el.remove();
    breakers.delete(name);
    dirty.delete(e);
    orderDirty = true;
  }

  function setSnapshot(e, snap, now) {
    e.snap = snap;
    e.at = now;
    // LLM providers' breakers carry their rate-limit cooldown (service.llm.cooldown).
    if (snap.cooldown_remaining !== undefined) e.cooldown = snap.cooldown_remaining;
    markDirty(e);
  }

  function sample(e, snap, now) {
    const counts = OUTCOMES.map(([, field]) => snap[field] || 0);
    if (e.last && now > e.last.t) {
      const dt = (now - e.last.t) / 1000;
      // A reset restarts the counters: count from zero then rather than going negative.
      const point = counts.map((c, i) => (c >= e.last.counts[i] ? c - e.last.counts[i] : c) / dt);
      e.samples.push(point);
      if (e.samples.length > SAMPLES) e.samples.shift();
    }
    e.last = { t: now, counts };
  }

  function onMetrics(body) {
    const now = Date.now();
    const seen = new Set();
    for (const [name, snap] of Object.entries(body.breakers || {})) {
      const e = entry(name);
      seen.add(name);
      sample(e, snap, now);
      setSnapshot(e, snap, now);
    }
    // The metrics event lists every breaker: one missing from it has been removed.
    for (const name of [...breakers.keys()]) if (!seen.has(name)) remove(name);
    orderDirty = true;
    scheduleStatus();
    requestFrame();
  }

  function onStateChanged(ev) {
    const e = entry(ev.breaker);
    const snap = Object.assign({}, e.snap || {}, {
      name: ev.breaker,
      state: ev.to_state,
      forced: ev.forced,
      state_changed_at: ev.at,
      consecutive_failures: ev.consecutive_failures,
      failed_calls: ev.failed_calls,
      total_calls: ev.total_calls,
      half_open_calls_in_flight: 0,
      // Until the resync below brings the exact rest of the break.
      retry_after: ev.to_state === "open" && !ev.forced ? policyOf(ev.breaker).timeout_duration : null,
    });
    setSnapshot(e, snap, Date.now());
    pendingTimeline.push(ev);
    orderDirty = true;
    scheduleResync();
    scheduleStatus();
    requestFrame();
  }

  function policyOf(name) {
    return policies.get(name) || {};
  }

  // -- rendering ---------------------------------------------------------------------------------

  function markDirty(e) {
    dirty.add(e);
    requestFrame();
  }

  function requestFrame() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function render() {
    frame = 0;
    let budget = BATCH;
    for (const e of dirty) {
      if (budget-- <= 0) break;
      dirty.delete(e);
      paint(e);
    }
    if (orderDirty) reorder();
    flushTimeline();
    if (dirty.size) requestFrame();
  }

  function paint(e) {
    const { snap, parts, el } = e;
    if (!snap) return;
    el.hidden = !matchesFilter(e.name);
    if (el.hidden) return; // painted when the filter shows it again
    const policy = policyOf(e.name);
    const state = snap.state;
    el.className = `card is-${state}`;
    parts.state.textContent = STATE_TEXT[state] || String(state);
    parts.state.className = `badge state state-${state}`;
    parts.forced.hidden = !snap.forced;
    const threshold = policy.failure_threshold;
    parts.consecutive.textContent =
      threshold != null ? `${snap.consecutive_failures} / ${threshold}` : `${snap.consecutive_failures}`;
    parts.consecutive.classList.toggle("over", threshold != null && snap.consecutive_failures >= threshold);
    const rateThreshold = policy.failure_rate_threshold;
    parts.rate.textContent =
      rateThreshold != null ? `${pct(snap.failure_rate)} / ${pct(rateThreshold)}` : pct(snap.failure_rate);
    parts.rate.classList.toggle("over", rateThreshold != null && snap.failure_rate >= rateThreshold);
    parts.calls.textContent = `${snap.total_calls ?? 0} (${snap.rejected_calls ?? 0} rejected)`;
    parts.latency.textContent = `${duration(snap.duration_p50)} / ${duration(snap.duration_p99)}`;
    const cap = policy.half_open_max_calls;
    const inFlight = snap.half_open_calls_in_flight ?? 0;
    parts.probes.textContent = cap != null ? `${inFlight} / ${cap}` : `${inFlight}`;
    parts.actions.hidden = !token();
    paintTimes(e, Date.now());
    paintSparkline(e);
  }

  /** The parts that move with the clock (called every second too). */
  function paintTimes(e, now) {
    const { snap, parts } = e;
    if (!snap) return;
    const since = snap.state_changed_at;
    parts.inState.textContent = since == null ? "since start" : span(now / 1000 - since);
    if (snap.state === "open") {
      parts.rowProbe.hidden = false;
      if (snap.forced) parts.probe.textContent = "never (forced open)";
      else if (snap.retry_after == null) parts.probe.textContent = "n/a";
      else {
        const left = snap.retry_after - (now - e.at) / 1000;
        parts.probe.textContent = left > 0 ? span(left) : "due";
      }
    } else {
      parts.rowProbe.hidden = true;
    }
    if (e.cooldown != null) {
      const left = e.cooldown - (now - e.at) / 1000;
      parts.rowCooldown.hidden = false;
      parts.cooldown.textContent = left > 0 ? span(left) : "none";
    } else {
      parts.rowCooldown.hidden = true;
    }
  }

  function paintSparkline(e) {
    const { samples, parts } = e;
    let max = 1;
    for (const point of samples) for (const v of point) if (v > max) max = v;
    // Right-aligned; a young history fills at least a third of the width rather than a sliver.
    const slots = Math.max(samples.length, SAMPLES / 3);
    const step = 120 / (slots - 1);
    const offset = (slots - samples.length) * step;
    OUTCOMES.forEach(([key], i) => {
      const points = samples.map(
        (p, j) => `${(offset + j * step).toFixed(1)},${(29 - (p[i] / max) * 27).toFixed(1)}`,
      );
      // A lone point draws nothing: start it one step earlier at the same height.
      if (points.length === 1) points.unshift(`${(offset - step).toFixed(1)},${points[0].split(",")[1]}`);
      parts.lines[key].setAttribute("points", points.join(" "));
    });
    const legend = parts.legend;
    legend.replaceChildren();
    const current = samples[samples.length - 1];
    const head = document.createElement("span");
    head.textContent = current ? "calls/s now: " : "calls/s: waiting for samples";
    legend.append(head);
    if (!current) return;
    OUTCOMES.forEach(([key, , label], i) => {
      const item = document.createElement("span");
      item.className = `k-${key}`;
      item.textContent = `${i ? " · " : ""}${rate(current[i])} ${label}`;
      legend.append(item);
    });
  }

  function sortKey() {
    return $("sort").value;
  }

  function compare(a, b) {
    const mode = sortKey();
    if (mode === "state") {
      const ra = RANK[a.snap?.state] ?? 3;
      const rb = RANK[b.snap?.state] ?? 3;
      if (ra !== rb) return ra - rb;
    } else if (mode === "failures") {
      const d = (b.snap?.failure_rate ?? 0) - (a.snap?.failure_rate ?? 0);
      if (d) return d;
    }
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  }

  function reorder() {
    orderDirty = false;
    const sorted = [...breakers.values()].sort(compare);
    const same = sorted.length === order.length && sorted.every((e, i) => e === order[i]);
    if (!same) {
      const fragment = document.createDocumentFragment();
      for (const e of sorted) fragment.append(e.el);
      cards.append(fragment);
      order = sorted;
    }
    updateCounts();
  }

  function matchesFilter(name) {
    return !filterText || name.toLowerCase().includes(filterText);
  }

  function applyFilter() {
    filterText = $("filter").value.trim().toLowerCase();
    for (const e of breakers.values()) {
      const hidden = !matchesFilter(e.name);
      if (e.el.hidden && !hidden) markDirty(e); // it was not painted while hidden
      e.el.hidden = hidden;
    }
    updateCounts();
  }

  function updateCounts() {
    const counts = { open: 0, half_open: 0, closed: 0 };
    let shown = 0;
    for (const e of breakers.values()) {
      if (e.snap && e.snap.state in counts) counts[e.snap.state] += 1;
      if (!e.el.hidden) shown += 1;
    }
    $("counts").textContent =
      `${breakers.size} (${counts.open} open, ${counts.half_open} half-open, ${counts.closed} closed)`;
    $("shown").textContent = shown === breakers.size ? "" : `(${shown} shown)`;
    $("empty").hidden = breakers.size > 0;
  }

  function flushTimeline() {
    if (!pendingTimeline.length) return;
    const list = $("timeline");
    for (const ev of pendingTimeline.splice(0)) {
      const item = document.createElement("li");
      const time = document.createElement("time");
      time.dateTime = new Date(ev.at * 1000).toISOString();
      time.textContent = clock(ev.at);
      const name = document.createElement("strong");
      name.textContent = ev.breaker;
      const move = document.createElement("span");
      move.className = `to-${ev.to_state}`;
      move.textContent = ` ${STATE_TEXT[ev.from_state] || ev.from_state} → ${STATE_TEXT[ev.to_state] || ev.to_state}`;
      const reason = document.createElement("span");
      reason.className = "note";
      reason.textContent = ` (${ev.reason})`;
      item.append(time, name, move, reason);
      list.prepend(item);
    }
    while (list.children.length > TIMELINE) list.lastElementChild.remove();
  }

  // -- the live stream -------------------------------------------------------------------------

  function setPill(id, text, kind, title) {
    const el = $(id);
    el.textContent = text;
    el.className = `pill pill-${kind}`;
    el.title = title || "";
  }

  function connect() {
    clearTimeout(reconnectTimer);
    const es = new EventSource("/events");
    source = es;
    es.addEventListener("open", () => {
      setPill("live", "live", "good");
      retryDelay = 1000;
    });
    es.addEventListener("metrics", (ev) => onMetrics(JSON.parse(ev.data)));
    es.addEventListener("state_changed", (ev) => onStateChanged(JSON.parse(ev.data)));
    // Both the browser's own connection errors and the server's `event: error` (this client
    // fell too far behind) arrive as "error"; either way start over: the snapshot sent on
    // connect resyncs the page, so nothing stays stale.
    es.addEventListener("error", (ev) => {
      if (source !== es) return;
      es.close();
      source = null;
      const why = ev.data ? JSON.parse(ev.data).message : "connection lost";
      setPill("live", "reconnecting", "bad", why);
      reconnectTimer = setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, MAX_RETRY);
    });
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return { status: response.status, body };
  }

  function scheduleResync() {
    if (resyncTimer) return;
    const wait = Math.max(100, RESYNC_EVERY - (Date.now() - lastResync));
    resyncTimer = setTimeout(resync, wait);
  }

  async function resync() {
    lastResync = Date.now();
    try {
      const { status, body } = await getJSON("/breakers");
      if (status === 200 && body) {
        const now = Date.now();
        for (const [name, snap] of Object.entries(body.breakers || {})) setSnapshot(entry(name), snap, now);
            orderDirty = true;
        requestFrame();
      }
    } catch {
      // The stream's reconnect shows that the service is unreachable.
    } finally {
      resyncTimer = 0;
    }
  }

  function schedulePolicies() {
    if (!policiesTimer) policiesTimer = setTimeout(loadPolicies, 200);
  }

  async function loadPolicies() {
    try {
      const { status, body } = await getJSON("/dashboard/policies.json");
      if (status === 200 && body) {
        policies = new Map(Object.entries(body.breakers || {}));
        adminEnabled = Boolean(body.admin_enabled);
        showAdmin();
        for (const e of breakers.values()) markDirty(e);
      }
    } catch {
      // Retried when the next unknown breaker appears or the stream reconnects.
    } finally {
      policiesTimer = 0;
    }
  }

  function scheduleStatus() {
    if (statusTimer) return;
    const wait = Math.max(100, 2000 - (Date.now() - lastStatus));
    statusTimer = setTimeout(loadStatus, wait);
  }

  async function loadStatus() {
    lastStatus = Date.now();
    try {
      const health = await getJSON("/health");
      const overall = health.body?.overall_health ?? "unknown";
      const kind = { healthy: "good", degraded: "warn", failed: "bad", error: "bad" }[overall] || "unknown";
      setPill("health", overall, kind);
      const cluster = health.body?.cluster;
      if (!cluster) setPill("cluster", "off", "unknown", "not in cluster mode");
      else setPill("cluster", cluster.status, cluster.status === "connected" ? "good" : "bad");
      const ready = await getJSON("/readyz");
      if (ready.status === 200) setPill("ready", "ready", "good");
      else if (ready.status === 404) setPill("ready", "n/a", "unknown", "this service has no /readyz");
      else setPill("ready", "not ready", "bad", unservable(ready.body));
    } catch {
      setPill("health", "unreachable", "bad");
      setPill("ready", "unknown", "unknown");
    } finally {
      statusTimer = 0;
    }
  }

  /** Why /readyz said no: its routes that cannot be served, and why each provider cannot. */
  function unservable(body) {
    const routes = body?.unservable;
    if (!Array.isArray(routes)) return body?.error?.message ?? "";
    return routes
      .map((r) => `${r.route}: ${(r.providers || []).map((p) => `${p.name} ${p.reason ?? ""}`).join(", ")}`)
      .join("; ");
  }

  // -- admin actions -----------------------------------------------------------------------------

  function token() {
    return adminEnabled ? sessionStorage.getItem(TOKEN_KEY) : null;
  }

  function showAdmin() {
    const has = Boolean(token());
    $("admin-disabled").hidden = adminEnabled;
    $("token-form").hidden = !adminEnabled || has;
    $("admin-on").hidden = !adminEnabled || !has;
    for (const e of breakers.values()) e.parts.actions.hidden = !has;
  }

  function say(text, isError) {
    const message = $("message");
    message.textContent = text;
    message.classList.toggle("error", Boolean(isError));
  }

  function confirmAction(text) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  async function post(path) {
    const response = await fetch(path, {
      method: "POST",
      headers: { Authorization: `Bearer ${token()}`, Accept: "application/json" },
      cache: "no-store",
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showAdmin();
    }
    return { status: response.status, body };
  }

  const VERB = { open: "Force open", close: "Force close", reset: "Reset" };

  async function act(name, action) {
    if (!(await confirmAction(`${VERB[action]} the breaker “${name}”?`))) return;
    try {
      const { status, body } = await post(`/breakers/${encodeURIComponent(name)}/${action}`);
      if (status === 200 && body) {
        setSnapshot(entry(name), body, Date.now());
        orderDirty = true;
        say(`${VERB[action]} “${name}”: now ${STATE_TEXT[body.state] || body.state}${body.forced ? " (forced)" : ""}`);
      } else {
        say(`${VERB[action]} “${name}” failed (HTTP ${status}): ${body?.error?.message ?? "no details"}`, true);
      }
    } catch (err) {
      say(`${VERB[action]} “${name}” failed: ${err}`, true);
    }
  }

  async function resetAll() {
    if (!(await confirmAction("Reset every breaker to CLOSED and clear its counts?"))) return;
    try {
      const { status, body } = await post("/breakers/reset");
      if (status === 200 && body) {
        say(`Reset ${body.reset.length} breakers`);
        resync();
      } else {
        say(`Reset all failed (HTTP ${status}): ${body?.error?.message ?? "no details"}`, true);
      }
    } catch (err) {
      say(`Reset all failed: ${err}`, true);
    }
  }

  // -- wiring --------------------------------------------------------------------------------------

  cards.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const card = button.closest(".card");
    act(card.dataset.name, button.dataset.action);
  });
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    showAdmin();
    say("Actions enabled; the server checks the token on each action");
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showAdmin();
    say("Token forgotten");
  });
  $("reset-all").addEventListener("click", resetAll);
  $("filter").addEventListener("input", applyFilter);
  $("sort").addEventListener("change", () => {
    orderDirty = true;
    requestFrame();
  });
  setInterval(() => {
    const now = Date.now();
    for (const e of breakers.values()) if (!e.el.hidden) paintTimes(e, now);
  }, 1000);

  loadPolicies();
  loadStatus();
  connect();
})();
