// The wasmq dashboard in headless Chromium (Debian's, driven by playwright-core).
//
// Run by tests/all/dashboard.rs (`cargo test -p wasmq --test all dashboard`), which starts
// Redis and a `wasmq run --http` host with real components, puts jobs in every state, and
// passes what Redis holds in the environment:
//
//   WASMQ_URL              the dashboard, http://127.0.0.1:<port>
//   WASMQ_TOKEN            the server's API token (typed into the page, as an operator would)
//   WASMQ_QUEUE            the queue to look at (paused, so its counts hold still)
//   WASMQ_EXPECT_COUNTS    {"waiting": n, ...}: its counts, read from Redis
//   WASMQ_EXPECT_ATTEMPTS  {"<job id>": ["retry", "ok"], ...}: attempts' outcomes, from Redis
//   WASMQ_TIMELINE_QUEUE   the queue of the timeline's job
//   WASMQ_TIMELINE_JOB     a job retried then completed, whose timeline the page charts
//   WASMQ_EXPECT_TIMELINE  [{"attempt": 1, "outcome": "retry", "duration_ms": 12}, ...]: its
//                          attempts, from Redis
//   WASMQ_EXPECT_CALLS     [{"attempt": 1, "kind": "http", "name": "POST http://...",
//                          "outcome": "500"}, ...]: its attempts' calls in order, from Redis
//   WASMQ_EXPECT_DURATIONS {"<handler>": n, ...}: attempts of the queue's completed jobs per
//                          handler, from Redis (the durations chart counts them)
//   WASMQ_REPLAY_JOB       a dead job to replay through the page (Rust then checks Redis)
//   WASMQ_CANCEL_QUEUE     a queue with a running job (an hour-long sleep)
//   WASMQ_CANCEL_JOB       that job, to cancel through its page (Rust then checks Redis)
//   WASMQ_HANDLER          a handler with two versions, to roll back to version 1
//   WASMQ_LIVE_QUEUE       a queue completing jobs while the test runs (for the chart)
//   WASMQ_SCHEDULE         a schedule (not paused) to pause through the page
//   WASMQ_SCHEDULE_RUNS    [{"local": rfc3339, "utc": rfc3339}, ...]: its next 3 runs
//   WASMQ_SEARCH           {"state": s, "text": t, "ids": [...]}: a payload search to type into
//                          the queue page, and the ids of the jobs it must find, from Redis
//   WASMQ_SCREENSHOTS      directory for the screenshots
//   WASMQ_CHROMIUM         the browser [default: /usr/bin/chromium]
//
// Every wait is bounded: actions and waits time out after 15 s, each test after 60 s.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through cargo test (tests/all/dashboard.rs)`);
  return value;
}

const base = env('WASMQ_URL');
const apiToken = env('WASMQ_TOKEN');
const queue = env('WASMQ_QUEUE');
const expectCounts = JSON.parse(env('WASMQ_EXPECT_COUNTS'));
const expectAttempts = JSON.parse(env('WASMQ_EXPECT_ATTEMPTS'));
const replayJob = env('WASMQ_REPLAY_JOB');
const cancelQueue = env('WASMQ_CANCEL_QUEUE');
const cancelJob = env('WASMQ_CANCEL_JOB');
const timelineQueue = env('WASMQ_TIMELINE_QUEUE');
const timelineJob = env('WASMQ_TIMELINE_JOB');
const expectTimeline = JSON.parse(env('WASMQ_EXPECT_TIMELINE'));
const expectCalls = JSON.parse(env('WASMQ_EXPECT_CALLS'));
const expectDurations = JSON.parse(env('WASMQ_EXPECT_DURATIONS'));
const handler = env('WASMQ_HANDLER');
const liveQueue = env('WASMQ_LIVE_QUEUE');
const schedule = env('WASMQ_SCHEDULE');
const scheduleRuns = JSON.parse(env('WASMQ_SCHEDULE_RUNS'));
const search = JSON.parse(env('WASMQ_SEARCH'));
const screenshots = env('WASMQ_SCREENSHOTS');
const executablePath = process.env.WASMQ_CHROMIUM || '/usr/bin/chromium';

const WAIT = 15_000;
const TEST = { timeout: 60_000 };
const STATES = ['waiting', 'delayed', 'active', 'retry', 'completed', 'dead'];

let profile;
let context;
let page;
const problems = [];

/** The count shown in a cell, as a number ("1,234" -> 1234). */
const shownNumber = (text) => Number(text.replace(/[^0-9.]/g, ''));

/** Polls `probe` until it returns a truthy value; fails after `within` ms with `what`. */
async function until(what, probe, within = WAIT) {
  const deadline = Date.now() + within;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) assert.fail(`timed out after ${within} ms waiting for ${what} (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A job's state through the API (reads need no token on loopback). */
async function jobState(id) {
  const response = await fetch(`${base}/api/queues/${encodeURIComponent(queue)}/jobs/${encodeURIComponent(id)}`);
  return (await response.json()).state;
}

async function confirmDialog(button) {
  const dialog = page.locator('dialog#confirm');
  await dialog.waitFor({ state: 'visible' });
  assert.equal(await page.locator('#confirm-ok').textContent(), button);
  await page.locator('#confirm-ok').click();
  await dialog.waitFor({ state: 'hidden' });
}

async function attemptOutcomes() {
  const rows = page.locator('table.attempts tbody tr[data-attempt]');
  await rows.first().waitFor();
  return rows.evaluateAll((trs) => trs.map((tr) => [tr.dataset.attempt, tr.cells[1].textContent.trim()]));
}

describe('the wasmq dashboard', { timeout: 300_000 }, () => {
  before(async () => {
    mkdirSync(screenshots, { recursive: true });
    profile = mkdtempSync(join(tmpdir(), 'wasmq-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath,
      headless: true,
      timeout: 30_000,
      viewport: { width: 1360, height: 900 },
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    context.setDefaultTimeout(WAIT);
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => problems.push(`uncaught: ${err.message}`));
    page.on('console', (msg) => {
      // A refused request logs "Failed to load resource" (the 401 below is on purpose);
      // anything else at error level, a CSP violation above all, is a fault of the page.
      if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) {
        problems.push(`console: ${msg.text()}`);
      }
    });
  });

  after(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  it('is served with a strict content security policy', TEST, async () => {
    const response = await page.goto(base);
    assert.equal(response.status(), 200);
    const headers = response.headers();
    assert.match(headers['content-type'], /^text\/html/);
    assert.match(headers['content-security-policy'], /default-src 'self'/);
    assert.match(headers['content-security-policy'], /frame-ancestors 'none'/);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.ok(headers.etag, 'an ETag');
    const script = await page.request.get(`${base}/dashboard/app.js`);
    assert.match(script.headers()['content-type'], /^text\/javascript/);
  });

  it("shows each queue's counts per state, as Redis has them", TEST, async () => {
    const row = page.locator(`tr[data-queue="${queue}"]`);
    await until(`the counts of ${queue} to read ${JSON.stringify(expectCounts)}`, async () => {
      const shown = {};
      for (const state of STATES) {
        shown[state] = shownNumber(await row.locator(`td[data-state="${state}"]`).textContent());
      }
      return STATES.every((s) => shown[s] === expectCounts[s]) ? shown : JSON.stringify(shown);
    });
    assert.equal((await row.locator('.badge').textContent()).trim(), 'paused');
  });

  it('charts the throughput of a busy queue', TEST, async () => {
    const rate = page.locator(`tr[data-queue="${liveQueue}"] td[data-rate]`);
    // It completes 10 jobs a second: a few seconds of them make a chart worth a screenshot.
    await until(`${liveQueue} to show a completion rate`, async () => shownNumber(await rate.textContent()) >= 3, 30_000);
    await until('the chart to show a rate', async () => {
      const text = await page.locator('[data-chart] .rate').first().textContent();
      return shownNumber(text.split(' ')[0]) > 0;
    });
    await page.screenshot({ path: join(screenshots, 'dashboard.png'), fullPage: true });
  });

  it('charts attempt duration percentiles per handler on the queue page', TEST, async () => {
    await page.getByRole('link', { name: queue, exact: true }).first().click();
    for (const [name, count] of Object.entries(expectDurations)) {
      const box = page.locator(`[data-chart="durations"] .handler-durations[data-handler="${name}"]`);
      await box.waitFor();
      assert.equal(await box.getAttribute('data-count'), String(count), `attempts of ${name}`);
      assert.match(await box.locator('.figures').textContent(), new RegExp(`^${count} attempts? · p50 .+ · p95 .+ · p99 .+`));
      // Three series, each with a point per minute that had attempts (at least one).
      for (const p of ['p50', 'p95', 'p99']) {
        const points = await box.locator(`svg.durations polyline[data-p="${p}"]`).getAttribute('points');
        assert.match(points, /^\d+(\.\d)?,\d+(\.\d)?/, `${name} ${p} has points`);
      }
      assert.ok(await box.locator('svg.durations circle').count() >= 3);
    }
    await page.locator('[data-chart="durations"]').screenshot({ path: join(screenshots, 'dashboard-durations.png') });
    await page.getByRole('link', { name: 'Queues', exact: true }).first().click();
  });

  it("shows every attempt of a job that was retried, with its outcome", TEST, async () => {
    await page.getByRole('link', { name: queue, exact: true }).first().click();
    for (const [id, outcomes] of Object.entries(expectAttempts)) {
      const state = await jobState(id);
      // Through the page: the state's tile, then the job's row.
      await page.locator(`a.tile[data-state="${state}"]`).click();
      await page.locator(`tr[data-job="${id}"] a`).click();
      await page.locator('h1', { hasText: `Job ${id}` }).waitFor();
      const shown = await attemptOutcomes();
      assert.deepEqual(shown, outcomes.map((outcome, i) => [String(i + 1), outcome]), `attempts of ${id}`);
      for (const cell of await page.locator('table.attempts tbody tr[data-attempt] td.mono').allTextContents()) {
        assert.ok(cell.trim().length > 0, 'each attempt names its host');
      }
      if (outcomes.length === 2) {
        // The flaky job: each attempt's captured log, and the last progress it reported.
        const logs = await page.locator('table.attempts tr.logs pre').allTextContents();
        assert.deepEqual(logs.map((l) => l.trim()), ['info: flaky attempt 1 of 3', 'info: flaky attempt 2 of 3']);
        await page.locator('h2', { hasText: 'Progress 100%' }).waitFor({ timeout: 15000 });
        await page.screenshot({ path: join(screenshots, 'dashboard-job.png'), fullPage: true });
      }
      await page.getByRole('link', { name: queue, exact: true }).first().click();
    }
  });

  it('charts the timeline of a retried then completed job: its attempts in order, with durations and calls', TEST, async () => {
    // By its address, as a link to it would open it.
    await page.evaluate((hash) => { location.hash = hash; }, `#/queues/${encodeURIComponent(timelineQueue)}/jobs/${encodeURIComponent(timelineJob)}`);
    await page.locator('h1', { hasText: `Job ${timelineJob}` }).waitFor();
    const chart = page.locator('[data-chart="timeline"] svg.timeline');
    await chart.locator('g[data-kind="attempt"]').first().waitFor();
    const bars = await chart.locator('g[data-kind="attempt"]').evaluateAll((gs) => gs.map((g) => ({
      attempt: Number(g.dataset.attempt),
      outcome: g.dataset.outcome,
      duration_ms: Number(g.dataset.durationMs),
      x: Number(g.querySelector('rect').getAttribute('x')),
      width: Number(g.querySelector('rect').getAttribute('width')),
    })));
    assert.deepEqual(bars.map(({ attempt, outcome, duration_ms }) => ({ attempt, outcome, duration_ms })), expectTimeline);
    for (let i = 1; i < bars.length; i += 1) {
      assert.ok(bars[i].x >= bars[i - 1].x + bars[i - 1].width - 0.01 || bars[i].x > bars[i - 1].x,
        `attempt ${bars[i].attempt} is drawn after attempt ${bars[i - 1].attempt}`);
    }
    assert.ok(bars.every((b) => b.width >= 4), 'every attempt is visible');
    const kinds = await chart.locator('g[data-kind]').evaluateAll((gs) => gs.map((g) => g.dataset.kind));
    assert.equal(kinds[0], 'enqueued');
    assert.equal(kinds[kinds.length - 1], 'finished');
    // The list under the chart says each attempt's duration as the page formats durations.
    const lines = await page.locator('ol.timeline-list li[data-kind="attempt"]').allTextContents();
    assert.equal(lines.length, expectTimeline.length);
    for (const [i, a] of expectTimeline.entries()) {
      const shown = await page.evaluate(async (ms) => (await import('/dashboard/format.js')).fmtDuration(ms), a.duration_ms);
      assert.ok(lines[i].includes(`attempt ${a.attempt} ${a.outcome} ${shown}`), `"${lines[i]}" says attempt ${a.attempt} ${a.outcome} ${shown}`);
    }
    // Each outbound request and SQL statement is a bar in its attempt's lane, over its
    // attempt's bar, in order, coloured by its kind, a failed one (the 500) marked; its title
    // names it.
    const calls = await chart.locator('g[data-kind="call"]').evaluateAll((gs) => gs.map((g) => {
      const rect = g.querySelector('rect');
      return {
        attempt: Number(g.dataset.attempt),
        kind: g.dataset.callKind,
        name: g.dataset.name,
        outcome: g.dataset.outcome,
        classes: g.getAttribute('class'),
        title: g.querySelector('title')?.textContent ?? '',
        x: Number(rect.getAttribute('x')),
        y: Number(rect.getAttribute('y')),
        width: Number(rect.getAttribute('width')),
        visible: rect.getBoundingClientRect().width > 0,
      };
    }));
    assert.deepEqual(calls.map(({ attempt, kind, name, outcome }) => ({ attempt, kind, name, outcome })), expectCalls);
    const kinds2 = new Set(calls.map((c) => c.kind));
    assert.ok(kinds2.has('http') && kinds2.has('sql'), 'both an HTTP request and a SQL statement are drawn');
    const runY = await chart.locator('g[data-kind="attempt"] rect').first().getAttribute('y');
    for (const c of calls) {
      assert.ok(c.visible && c.width >= 2, `${c.name} is visible`);
      assert.ok(c.classes.includes(c.kind), `${c.name} is coloured as ${c.kind}: ${c.classes}`);
      assert.equal(c.classes.includes('call-failed'), c.outcome === '500', `${c.name} ${c.outcome}: ${c.classes}`);
      assert.ok(c.title.includes(c.name) && c.title.includes(c.outcome), `the title of ${c.name}: ${c.title}`);
      assert.ok(c.y > Number(runY), `${c.name} is drawn inside the run lane`);
      const bar = bars.find((b) => b.attempt === c.attempt);
      // The scale is shared: a call lies within its attempt (a pixel of rounding either way).
      assert.ok(bar && c.x >= bar.x - 1 && c.x <= bar.x + bar.width + 1, `${c.name} within attempt ${c.attempt}`);
    }
    for (let i = 1; i < calls.length; i += 1) {
      assert.ok(calls[i].x >= calls[i - 1].x - 0.01, `call ${i} is drawn after call ${i - 1}`);
    }
    const callLines = await page.locator('ol.timeline-list li[data-kind="call"]').allTextContents();
    assert.equal(callLines.length, expectCalls.length);
    for (const [i, c] of expectCalls.entries()) {
      assert.ok(callLines[i].includes(`${c.name} → ${c.outcome}`), `"${callLines[i]}" names ${c.name} → ${c.outcome}`);
    }
    assert.ok(!/not recorded per attempt/.test(await page.locator('[data-chart="timeline"]').textContent()));
    await page.locator('[data-chart="timeline"]').screenshot({ path: join(screenshots, 'dashboard-timeline.png') });
    await page.evaluate((hash) => { location.hash = hash; }, `#/queues/${encodeURIComponent(queue)}`);
    await page.locator('a.tile').first().waitFor();
  });

  it("finds a queue's jobs by what their payload holds, with the search box", TEST, async () => {
    await page.locator(`a.tile[data-state="${search.state}"]`).click();
    const form = page.locator('form[data-search]');
    await form.locator('input[name="text"]').fill(search.text);
    await form.getByRole('button', { name: 'Search', exact: true }).click();
    const results = page.locator(`[data-results="${search.ids.length}"]`);
    await results.waitFor();
    const ids = await results.locator('table.jobs tbody tr[data-job]').evaluateAll((trs) => trs.map((tr) => tr.dataset.job));
    assert.deepEqual([...ids].sort(), search.ids);
    // One page, the whole queue examined, and the search in the address, so it is a link.
    assert.equal(await page.locator('a[data-next]').count(), 0);
    const examined = Number(await page.locator('[data-examined]').getAttribute('data-examined'));
    assert.ok(examined >= search.ids.length, `${examined} examined`);
    assert.match(await page.evaluate(() => location.hash), new RegExp(`state=${search.state}&text=`));
    await page.screenshot({ path: join(screenshots, 'dashboard-search.png'), fullPage: true });

    // Narrowed to a handler no job has: none found, and said so.
    await form.locator('input[name="handler"]').fill('no-such-handler');
    await form.getByRole('button', { name: 'Search', exact: true }).click();
    await page.locator('[data-results="0"]').waitFor();
    await page.locator('p.empty', { hasText: 'No matching jobs.' }).waitFor();
    // Clear goes back to the state's plain list.
    await page.getByRole('link', { name: 'Clear', exact: true }).click();
    await page.locator('h2', { hasText: `${search.state[0].toUpperCase()}${search.state.slice(1)} jobs` }).waitFor();
    assert.equal(await page.locator('[data-results]').count(), 0);
  });

  it('replays a dead job from the DLQ, after confirmation, with the token', TEST, async () => {
    await page.locator('a.tile[data-state="dead"]').click();
    const row = page.locator(`table.dlq tr[data-job="${replayJob}"]`);
    await row.waitFor();

    // Cancelling the dialog does nothing.
    await row.getByRole('button', { name: 'Replay', exact: true }).click();
    await page.locator('dialog#confirm').waitFor({ state: 'visible' });
    await page.locator('#confirm-cancel').click();
    assert.equal(await jobState(replayJob), 'dead');

    // Without the token the server refuses, and the page says so.
    await row.getByRole('button', { name: 'Replay', exact: true }).click();
    await confirmDialog('Replay');
    await until('the refusal to show', async () => /token/i.test(await page.locator('#toast').textContent()));
    assert.equal(await jobState(replayJob), 'dead');

    await page.locator('#token').fill(apiToken);
    await page.locator('#token-save').click();
    await row.getByRole('button', { name: 'Replay', exact: true }).click();
    await confirmDialog('Replay');
    await until('the replay to be reported', async () => /Replayed 1 job/.test(await page.locator('#toast').textContent()));
    await row.waitFor({ state: 'detached' });
    await page.screenshot({ path: join(screenshots, 'dashboard-dlq.png'), fullPage: true });
  });

  it('cancels a running job from its page, after confirmation, and shows who cancelled it', TEST, async () => {
    const hash = `#/queues/${encodeURIComponent(cancelQueue)}/jobs/${encodeURIComponent(cancelJob)}`;
    await page.evaluate((to) => { location.hash = to; }, hash);
    const button = page.getByRole('button', { name: 'Cancel job', exact: true });
    await button.waitFor();
    // The job is running: the page says its host stops it.
    await button.click();
    await page.locator('dialog#confirm').waitFor({ state: 'visible' });
    assert.match(await page.locator('dialog#confirm').textContent(), /running/);
    await page.locator('#confirm-cancel').click();
    await button.click();
    await confirmDialog('Cancel job');
    await until('the cancel to be reported', async () => /Cancelled job/.test(await page.locator('#toast').textContent()));
    // The page reads the job again: dead, with who cancelled it and its one attempt.
    await until('the job to show as cancelled', async () => {
      const facts = await page.locator('dl.facts').allTextContents();
      return facts.some((text) => text.includes('Cancelled by') && text.includes('api'));
    });
    assert.deepEqual(await attemptOutcomes(), [['1', 'cancelled']]);
    await page.getByRole('button', { name: 'Replay', exact: true }).waitFor();
  });

  it('rolls a handler back to its first version, after confirmation', TEST, async () => {
    await page.getByRole('link', { name: 'Handlers', exact: true }).click();
    await page.locator(`tr[data-handler="${handler}"] a`).click();
    const first = page.locator('table.versions tr[data-version="1"]');
    // Version 1 was deployed with grants: patterns, config keys and secret names, no values.
    const grants = await first.locator('td.grants').textContent();
    assert.equal(grants, 'outbound https://api.example.com\noutbound https://*.slack.com\nconfig region\nsecret MAIL_KEY');
    assert.equal(await page.locator('table.versions tr[data-version="2"] td.grants').textContent(), '—');
    assert.doesNotMatch(await page.content(), /eu-west-9/);
    await first.getByRole('button').click();
    await confirmDialog('Roll back');
    await until('version 1 to be current', async () => (await first.locator('.badge').count()) === 1);
    await page.screenshot({ path: join(screenshots, 'dashboard-handler.png'), fullPage: true });
  });

  it("lists a schedule with its next runs, and pauses it with the token", TEST, async () => {
    await page.getByRole('link', { name: 'Schedules', exact: true }).click();
    const row = page.locator(`table.schedules tr[data-schedule="${schedule}"]`);
    await row.waitFor();
    const cells = (await row.locator('td').allTextContents()).map((t) => t.trim());
    assert.deepEqual(cells.slice(0, 6), [schedule, '0 9 * * *', 'Asia/Seoul', 'reports', 'report', 'active']);
    assert.match(cells[6], /^in \d+/, 'the next run, from now');
    // Its next runs as the API gives them, in its zone and in UTC: those Rust computed, or one
    // day on if midnight UTC (its tick) passed in between.
    const runs = await row.locator('.run').evaluateAll((divs) => divs.map((d) => ({
      local: d.dataset.local, utc: d.dataset.utc,
      shown: [...d.querySelectorAll('span')].map((s) => s.textContent),
    })));
    const shift = runs[0]?.utc === scheduleRuns[1].utc ? 1 : 0;
    assert.deepEqual(runs.map(({ local, utc }) => ({ local, utc })).slice(0, 3 - shift), scheduleRuns.slice(shift),
      'the next runs');
    const [first] = scheduleRuns.slice(shift);
    assert.match(first.utc, /T00:00:00\+00:00$/);
    assert.deepEqual(runs[0].shown, [
      `${first.local.slice(0, 10)} 09:00:00 +09:00`,
      `${first.utc.slice(0, 10)} 00:00:00 UTC`,
    ]);

    // With the token (the replay above set it for this tab; set it again all the same).
    await page.locator('#token').fill(apiToken);
    await page.locator('#token-save').click();
    await row.getByRole('button', { name: 'Pause', exact: true }).click();
    await confirmDialog('Pause');
    await until('the pause to be reported', async () => /Schedule .* paused/.test(await page.locator('#toast').textContent()));
    await until('the row to show it paused', async () =>
      (await row.locator('td.status').textContent()).trim() === 'paused'
      && (await row.getByRole('button', { name: 'Resume', exact: true }).count()) === 1);
    const response = await fetch(`${base}/api/schedules`);
    const listed = (await response.json()).schedules.find((s) => s.name === schedule);
    assert.equal(listed.paused, true);
    await page.screenshot({ path: join(screenshots, 'dashboard-schedules.png'), fullPage: true });
  });

  it('logs no script error and no policy violation', TEST, async () => {
    assert.deepEqual(problems, []);
  });
});
