// analyticsd live dashboard: events per second and the latest events from
// /ws/analytics, and live metric charts from /ws/metrics/{id}. Each frame is
// {"result": update} or, at the end, {"error": {code, message, details}}.
'use strict';

const STATUS_NAMES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED',
  'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL',
  'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
// Errors that a retry cannot fix: stop and show them.
const FINAL_CODES = new Set([3, 5, 7, 12, 16]);
const MAX_EVENT_ROWS = 50;
const CHART_SECONDS = 60;

const $ = (sel, root = document) => root.querySelector(sel);

function wsUrl(path, params) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== '' && v != null) q.set(k, v);
  const qs = q.toString();
  return `${proto}//${location.host}${path}${qs ? '?' + qs : ''}`;
}

// A token may be given as #token=... (sent as the subprotocols bearer, <token>).
function subprotocols() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  return m ? ['bearer', decodeURIComponent(m[1])] : [];
}

// A WebSocket that reconnects with exponential backoff (0.5 s doubling to
// 30 s, with jitter) until stopped or until the server answers an error a
// retry cannot fix.
class LiveSocket {
  constructor(urlFn, handlers) {
    this.urlFn = urlFn;
    this.h = handlers;
    this.backoff = 500;
    this.stopped = false;
    this.timer = null;
    this.open();
  }
  open() {
    if (this.stopped) return;
    this.h.onState('connecting', 'connecting…');
    let ws;
    try {
      const protos = subprotocols();
      ws = protos.length ? new WebSocket(this.urlFn(), protos) : new WebSocket(this.urlFn());
    } catch (e) {
      this.retry(String(e));
      return;
    }
    this.ws = ws;
    this.finalError = null;
    ws.onopen = () => this.h.onState('live', 'live');
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame.error) {
        this.finalError = frame.error;
        return;
      }
      this.backoff = 500; // data flows: the next outage starts small again
      this.h.onResult(frame.result || {});
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const err = this.finalError;
      if (err && FINAL_CODES.has(err.code)) {
        this.stopped = true;
        this.h.onFatal(err);
        return;
      }
      let why = err ? `${STATUS_NAMES[err.code] || err.code}: ${err.message}`
        : ev.reason ? `closed (${ev.code}): ${ev.reason}` : `connection lost (${ev.code})`;
      this.retry(why);
    };
  }
  retry(why) {
    if (this.stopped) return;
    const delay = Math.round(this.backoff * (0.8 + Math.random() * 0.4));
    this.backoff = Math.min(this.backoff * 2, 30000);
    let left = Math.ceil(delay / 1000);
    const tick = () => this.h.onState('connecting', `${why}; retrying in ${left} s`);
    tick();
    const countdown = setInterval(() => { left = Math.max(0, left - 1); tick(); }, 1000);
    this.timer = setTimeout(() => { clearInterval(countdown); this.open(); }, delay);
    this.countdown = countdown;
  }
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.countdown);
    if (this.ws) { const ws = this.ws; this.ws = null; ws.close(1000); }
  }
}

// A line chart on a canvas: points {t (ms), v}, the last `seconds` shown.
class LineChart {
  constructor(canvas, seconds, color) {
    this.c = canvas;
    this.seconds = seconds;
    this.color = color;
    this.points = [];
  }
  push(t, v) {
    this.points.push({ t, v });
    const cut = t - this.seconds * 1000;
    while (this.points.length > 2 && this.points[0].t < cut) this.points.shift();
    this.c.dataset.lastValue = String(v);
    this.c.dataset.points = String(this.points.length);
    this.draw();
  }
  draw() {
    const c = this.c, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 600, h = c.clientHeight || Number(c.getAttribute('height')) || 150;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const padL = 44, padB = 18, padT = 8, padR = 8;
    const now = Date.now(), t0 = now - this.seconds * 1000;
    const max = niceMax(Math.max(1, ...this.points.map((p) => p.v || 0)));
    const x = (t) => padL + ((t - t0) / (now - t0)) * (w - padL - padR);
    const y = (v) => padT + (1 - v / max) * (h - padT - padB);
    // grid and axis labels
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#6b7280';
    g.strokeStyle = '#e5e7eb';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(padL, yy); g.lineTo(w - padR, yy); g.stroke();
      g.fillText(formatNumber(v), 4, yy + 4);
    }
    for (let s = 0; s <= this.seconds; s += 15) {
      const xx = x(now - s * 1000);
      g.fillText(s ? `-${s}s` : 'now', Math.min(xx - 10, w - 28), h - 4);
    }
    const pts = this.points.filter((p) => p.v != null && p.t >= t0 - 5000);
    if (!pts.length) return;
    // area, then line
    g.beginPath();
    g.moveTo(x(pts[0].t), y(0));
    for (const p of pts) g.lineTo(x(p.t), y(p.v));
    g.lineTo(x(pts[pts.length - 1].t), y(0));
    g.closePath();
    g.fillStyle = this.color + '22';
    g.fill();
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.v)) : g.moveTo(x(p.t), y(p.v))));
    g.strokeStyle = this.color;
    g.lineWidth = 2;
    g.stroke();
    const last = pts[pts.length - 1];
    g.beginPath();
    g.arc(x(last.t), y(last.v), 3, 0, 2 * Math.PI);
    g.fillStyle = this.color;
    g.fill();
  }
}

function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function formatNumber(v) {
  if (v == null || Number.isNaN(v)) return '–';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2).replace(/\.?0+$/, '') || '0';
}

function formatTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return isNaN(d) ? String(ts) : d.toLocaleTimeString([], { hour12: false }) +
    '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text == null ? '' : String(text);
  td.title = td.textContent;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function statusText(err) {
  return `${STATUS_NAMES[err.code] || 'code ' + err.code}: ${err.message}`;
}

// --- the analytics stream -------------------------------------------------

const state = { filters: { eventType: '', eventName: '', property: '' }, count: 0, dropped: 0 };
const rateChart = new LineChart($('#rate-chart'), CHART_SECONDS, '#2563eb');
let analytics = null;

function setStatus(el, kind, text) {
  el.className = `pill pill-${kind}` + (el.classList.contains('metric-status') ? ' metric-status' : '');
  el.textContent = text;
}

function analyticsParams() {
  const p = { includeEvents: 'true' };
  const f = state.filters;
  if (f.eventType) p.eventType = f.eventType;
  if (f.eventName) p.eventName = f.eventName;
  const m = /^\s*([^=\s]+)\s*=\s*(.*?)\s*$/.exec(f.property || '');
  if (m) p['properties.' + m[1]] = m[2];
  return p;
}

function onAggregates(snap) {
  const rates = snap.rates || [];
  const total = rates.reduce((s, r) => s + (r.perSecond || 0), 0);
  $('#current-rate').textContent = formatNumber(total);
  rateChart.push(Date.now(), total);
  const body = $('#rates-body');
  body.textContent = '';
  if (!rates.length) {
    const tr = document.createElement('tr');
    tr.className = 'empty';
    const td = document.createElement('td');
    td.colSpan = 3;
    td.textContent = 'no events in the last second';
    tr.appendChild(td);
    body.appendChild(tr);
  }
  for (const r of rates.slice(0, 8)) {
    const tr = document.createElement('tr');
    cell(tr, r.eventType); cell(tr, r.eventName); cell(tr, formatNumber(r.perSecond), 'num');
    body.appendChild(tr);
  }
  const dropped = Number(snap.droppedEvents || 0);
  if (dropped) {
    state.dropped += dropped;
    const el = $('#dropped');
    el.hidden = false;
    el.textContent = `This page fell behind: ${state.dropped} events were not shown (the rates still count them).`;
  }
}

function onEvent(ev) {
  state.count++;
  $('#event-count').textContent = String(state.count);
  const body = $('#events-body');
  const empty = body.querySelector('tr.empty');
  if (empty) empty.remove();
  const tr = document.createElement('tr');
  tr.className = 'fresh';
  tr.dataset.eventId = ev.eventId || '';
  cell(tr, formatTime(ev.timestamp));
  cell(tr, ev.eventType);
  cell(tr, ev.eventName);
  cell(tr, ev.sessionId || '');
  cell(tr, ev.properties ? JSON.stringify(ev.properties) : '');
  body.insertBefore(tr, body.firstChild);
  while (body.rows.length > MAX_EVENT_ROWS) body.deleteRow(body.rows.length - 1);
}

function connectAnalytics() {
  if (analytics) analytics.stop();
  const statusEl = $('#status');
  analytics = new LiveSocket(() => wsUrl('/ws/analytics', analyticsParams()), {
    onState: (kind, text) => setStatus(statusEl, kind, text),
    onResult: (u) => {
      if (u.aggregates) onAggregates(u.aggregates);
      else if (u.event) onEvent(u.event);
    },
    onFatal: (err) => setStatus(statusEl, 'error', statusText(err)),
  });
}

$('#filters').addEventListener('submit', (e) => {
  e.preventDefault();
  const fd = new FormData(e.target);
  state.filters = {
    eventType: fd.get('eventType').trim(),
    eventName: fd.get('eventName').trim(),
    property: fd.get('property').trim(),
  };
  connectAnalytics();
});

// --- metric charts ---------------------------------------------------------

function openMetric(id) {
  const panel = $('#metric-panel').content.firstElementChild.cloneNode(true);
  panel.dataset.metricId = id;
  $('.metric-title', panel).textContent = id;
  $('#metrics').prepend(panel);
  const statusEl = $('.metric-status', panel);
  const errEl = $('.metric-error', panel);
  const chart = new LineChart($('canvas', panel), CHART_SECONDS, '#15803d');
  // The sequence is a uint64 (a string in JSON): kept as text, sent back on
  // reconnect so the server resumes without a gap.
  let lastSeq = '';
  const groups = new Map(); // group label -> latest value of the open bucket
  const groupsEl = $('.metric-groups', panel);
  const sock = new LiveSocket(
    () => wsUrl('/ws/metrics/' + encodeURIComponent(id), lastSeq ? { afterSequence: lastSeq } : {}), {
      onState: (kind, text) => setStatus(statusEl, kind, text),
      onResult: (u) => {
        if (u.sequence) lastSeq = String(u.sequence);
        const v = u.value == null ? null : Number(u.value);
        const dims = Object.entries(u.dimensions || {}).sort(([a], [b]) => (a < b ? -1 : 1));
        const label = dims.map(([k, val]) => `${k}=${val}`).join(', ') || 'value';
        if (u.final) return; // a closed bucket: the open one is what is charted
        groups.set(label, v);
        // The chart follows the first group (in label order); the list shows all.
        const first = [...groups.keys()].sort()[0];
        if (label === first) {
          $('.metric-value', panel).textContent = formatNumber(v);
          chart.push(Date.now(), v);
        }
        if (groups.size > 1 || dims.length) {
          groupsEl.hidden = false;
          groupsEl.textContent = [...groups.entries()].sort().slice(0, 12)
            .map(([g, x]) => `${g}: ${formatNumber(x)}`).join('   ');
        }
      },
      onFatal: (err) => {
        setStatus(statusEl, 'error', STATUS_NAMES[err.code] || 'error');
        $('canvas', panel).hidden = true; // nothing to chart
        $('.metric-value', panel).textContent = '';
        errEl.hidden = false;
        errEl.textContent = '';
        const what = err.code === 5 ? 'No such metric (the id of a metric of your account)'
          : err.code === 12 ? 'Live metric charts are not available on this server'
          : err.code === 3 ? 'The server refused the request' : 'The metric stream ended';
        const strong = document.createElement('strong');
        strong.textContent = what + ': ';
        const code = document.createElement('code');
        code.textContent = statusText(err);
        errEl.append(strong, code);
      },
    });
  $('.close', panel).addEventListener('click', () => { sock.stop(); panel.remove(); });
  chart.draw();
}

$('#metric-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const id = $('#metric-id').value.trim();
  if (id) openMetric(id);
});

window.addEventListener('resize', () => rateChart.draw());
setInterval(() => rateChart.draw(), 1000); // keep the time axis moving
rateChart.draw();
connectAnalytics();
