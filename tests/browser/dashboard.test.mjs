// The live dashboard in a real headless browser (Debian's chromium driven by
// playwright-core): it loads from the bridge, connects to /ws/analytics,
// shows an event tracked through REST in its latest-events table and a
// non-zero events/s value on its chart, shows a metric stream's error
// nicely, and charts a real metric (created through POST /api/metrics) live
// as events are tracked. Saves a screenshot as
// BUILD/test-artifacts/dashboard.png.
//
// Usage: node dashboard.test.mjs [BUILD_DIR]   (default: ../../build)
// Environment: ANALYTICSD (the binary), CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const BUILD = resolve(process.argv[2] || join(HERE, '..', '..', 'build'));
const BIN = process.env.ANALYTICSD || join(BUILD, 'server', 'analyticsd');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = join(BUILD, 'test-artifacts');
const STEP_MS = 15000;

function log(msg) { console.log(`browser-test: ${msg}`); }

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitHealthy(base, proc, logPath) {
  const end = Date.now() + 20000;
  while (Date.now() < end) {
    if (proc.exitCode !== null) throw new Error(`analyticsd exited with ${proc.exitCode}: ${tail(logPath)}`);
    try {
      const r = await fetch(`${base}/health`);
      if (r.ok) return;
    } catch (e) { /* not listening yet */ }
    await sleep(100);
  }
  throw new Error(`analyticsd not healthy after 20 s: ${tail(logPath)}`);
}

function tail(path) {
  try { return readFileSync(path, 'utf8').split('\n').slice(-20).join('\n'); } catch (e) { return ''; }
}

async function main() {
  if (!existsSync(BIN)) throw new Error(`no analyticsd at ${BIN} (build first)`);
  if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM} (apt-get install chromium)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'ana-browser-'));
  const dataDir = join(work, 'data');
  const logPath = join(work, 'analyticsd.log');
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const base = `http://127.0.0.1:${httpPort}`;
  const { openSync } = await import('node:fs');
  const server = spawn(BIN, [], {
    cwd: work,
    stdio: ['ignore', 'ignore', openSync(logPath, 'w')],
    env: {
      PATH: process.env.PATH, HOME: work,
      GRPC_HOST: '127.0.0.1', GRPC_PORT: String(grpcPort), PORT: String(httpPort),
      DATA_DIR: dataDir, LOG_LEVEL: 'info', REALTIME_AGGREGATE_INTERVAL: '250',
      METRIC_STREAM_INTERVAL: '100',
      SHUTDOWN_GRACE_MS: '2000',
      ...(process.env.WEB_ROOT ? { WEB_ROOT: process.env.WEB_ROOT } : {}),
    },
  });
  let browser = null;
  let failed = null;
  const pageErrors = [];
  try {
    await waitHealthy(base, server, logPath);
    log(`analyticsd on ${base} (gRPC ${grpcPort})`);

    // A fresh profile each run; the flags keep chromium off the network.
    browser = await chromium.launchPersistentContext(join(work, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 900 },
    });
    const page = browser.pages()[0] || await browser.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });

    await page.goto(`${base}/`);
    await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'live');
    log('dashboard connected (status "live")');

    // Track events through REST; the page must show them.
    const name = `browser_test_${Math.random().toString(36).slice(2, 8)}`;
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${base}/api/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ eventType: 'browser', eventName: name,
          sessionId: 'session-1', properties: { plan: 'pro', step: i } }),
      });
      if (!r.ok) throw new Error(`POST /api/events answered ${r.status}: ${await r.text()}`);
    }
    log(`tracked 5 events named ${name}`);
    await page.waitForFunction((n) => document.querySelector('#events-body').textContent.includes(n), name);
    log('latest-events table shows the event');
    await page.waitForFunction(() => Number(document.querySelector('#rate-chart').dataset.lastValue) > 0);
    const rate = await page.textContent('#current-rate');
    const rows = await page.$$eval('#events-body tr', (trs) => trs.length);
    log(`events/s chart shows ${rate}/s; ${rows} rows in the table`);
    if (!(Number(rate) > 0)) throw new Error(`events/s shows ${rate}`);
    const ratesText = await page.textContent('#rates-body');
    if (!ratesText.includes(name)) throw new Error(`rates table lacks ${name}: ${ratesText}`);

    // A metric's live chart: the stream's error is shown, not thrown.
    await page.fill('#metric-id', 'delivery-rate');
    await page.click('#metric-form button[type=submit]');
    const panel = page.locator('.metric-panel').first();
    await panel.locator('.metric-error').waitFor({ state: 'visible' }).catch(() => {});
    const metricErr = (await panel.locator('.metric-error').textContent()) || '';
    const metricStatus = await panel.locator('.metric-status').textContent();
    log(`metric panel: status "${metricStatus}", message "${metricErr.trim()}"`);
    if (!/NOT_FOUND/.test(metricErr) || !/No such metric/.test(metricErr)) {
      throw new Error(`unknown metric not explained: "${metricErr}"`);
    }
    await panel.locator('.close').click();

    // A real metric: created over REST, opened, and charted live.
    const metricName = `browser_metric_${Math.random().toString(36).slice(2, 8)}`;
    const created = await fetch(`${base}/api/metrics`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: metricName, type: 'counter', formula: 'count(signup)' }),
    });
    if (!created.ok) throw new Error(`POST /api/metrics answered ${created.status}: ${await created.text()}`);
    const metricId = (await created.json()).metricId;
    log(`created metric ${metricId}`);
    await page.fill('#metric-id', metricId);
    await page.click('#metric-form button[type=submit]');
    const live = page.locator(`.metric-panel[data-metric-id="${metricId}"]`);
    await live.locator('.metric-status').filter({ hasText: 'live' }).waitFor();
    const before = Number(await live.locator('canvas').getAttribute('data-last-value') || 0);
    for (let i = 0; i < 3; i++) {
      const r = await fetch(`${base}/api/events`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ eventType: 'browser', eventName: 'signup', properties: { i } }),
      });
      if (!r.ok) throw new Error(`POST /api/events answered ${r.status}`);
    }
    await page.waitForFunction(([id, b]) => {
      const c = document.querySelector(`.metric-panel[data-metric-id="${id}"] canvas`);
      return c && Number(c.dataset.lastValue) >= b + 3;
    }, [metricId, before]);
    const shown = await live.locator('.metric-value').textContent();
    log(`metric chart updated live: value ${shown} (was ${before})`);

    // Some steady traffic, so the picture shows a line and a few rates.
    const names = ['page_view', 'message_sent', 'signup'];
    const until = Date.now() + 4000;
    for (let i = 0; Date.now() < until; i++) {
      const events = [];
      for (let k = 0; k < 1 + (i % 4); k++) {
        events.push({ eventType: 'demo', eventName: names[(i + k) % names.length],
          properties: { i, k } });
      }
      await fetch(`${base}/api/events/batch`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ events }),
      });
      await sleep(100);
    }
    const shot = join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    log(`screenshot: ${shot}`);
    if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.join(' | ')}`);
  } catch (e) {
    failed = e;
  } finally {
    if (browser) await browser.close().catch(() => {});
    server.kill('SIGTERM');
    const code = await new Promise((r) => {
      if (server.exitCode !== null) return r(server.exitCode);
      const t = setTimeout(() => { server.kill('SIGKILL'); r('killed'); }, 15000);
      server.on('exit', (c) => { clearTimeout(t); r(c); });
    });
    if (code !== 0 && !failed) failed = new Error(`analyticsd exited with ${code}: ${tail(logPath)}`);
    if (failed && !process.env.ANA_TEST_KEEP) log(`server log tail:\n${tail(logPath)}`);
    if (!process.env.ANA_TEST_KEEP) rmSync(work, { recursive: true, force: true });
  }
  if (failed) throw failed;
  log('OK');
}

main().catch((e) => { console.error(`browser-test: FAILED: ${e.stack || e}`); process.exit(1); });
