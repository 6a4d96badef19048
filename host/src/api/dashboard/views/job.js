// @ts-check
// #/queues/<q>/jobs/<id> : one job: its facts, payload, result and every attempt; cancel (a job
// that has not finished, a running one too) and replay (a dead one); its run timeline as a
// chart (timeline.js).

import { actOnDead, cancelJob, getJob, getTimeline, isStatus } from '../api.js';
import { act, confirmAction, toast } from '../chrome.js';
import { serverNow } from '../clock.js';
import { append, clockCell, crumbs, enc, h, outcomeBadge, stateBadge, title } from '../dom.js';
import { fmtBytes, fmtDuration, fmtTime } from '../format.js';
import { timelinePanel } from '../timeline.js';

/** @typedef {import('../api.js').Encoding} Encoding */
/** @typedef {import('../api.js').JobView} JobView */
/** @typedef {import('../dom.js').Child} Child */
/** @typedef {import('../dom.js').Leaf} Leaf */
/** @typedef {import('../poll.js').View} View */

const PREVIEW_CHARS = 4096;
/** A job that has not moved has its timeline re-read at most this often. */
const TIMELINE_EVERY_MS = 5000;

/** A payload or result: JSON pretty-printed, the first PREVIEW_CHARS shown until asked for
 *  more, its size. @param {string | null} text @param {Encoding | null} encoding */
function preview(text, encoding) {
  if (text === null || text === undefined) return h('p', { class: 'muted' }, 'none');
  let shown = text;
  const note = encoding === 'base64' ? 'not UTF-8: shown as base64' : null;
  if (encoding === 'utf8' && /^\s*[[{]/.test(text) && text.length < 256 * 1024) {
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON: as is */ }
  }
  const size = encoding === 'base64'
    ? Math.floor((text.length * 3) / 4) - (text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0)
    : new TextEncoder().encode(text).length;
  const pre = h('pre', { class: 'payload' }, shown.length > PREVIEW_CHARS ? `${shown.slice(0, PREVIEW_CHARS)}…` : shown);
  const more = shown.length > PREVIEW_CHARS
    ? h('button', { class: 'quiet small', onclick: (e) => { pre.textContent = shown; if (e.target instanceof Element) e.target.remove(); } }, 'Show all')
    : null;
  return h('div', {}, pre, h('p', { class: 'muted' }, `${fmtBytes(size)}`, note ? ` · ${note}` : '', ' ', more));
}

/** @param {string} queue @param {string} id @returns {View} */
export function jobView(queue, id) {
  const root = h('div', {},
    crumbs(h('a', { href: '#/' }, 'Queues'), h('a', { href: `#/queues/${enc(queue)}` }, queue), id),
    h('p', { class: 'muted' }, 'Loading…'));
  /** @type {JobView | null} */
  let job = null;
  let gone = false;
  // Built once and put back on each render, so a redraw keeps its element.
  const timeline = timelinePanel();

  /** @param {HTMLButtonElement} button @param {boolean} running */
  async function cancel(button, running) {
    const ok = await confirmAction({
      title: `Cancel job ${id}?`,
      text: running
        ? 'It is running: its host stops it at once, and nothing it would still write is written. It goes to the dead-letter queue as cancelled (replay runs it again).'
        : 'It will not run: it goes to the dead-letter queue as cancelled, its history kept (replay runs it again).',
      ok: 'Cancel job',
      danger: true,
    });
    if (!ok) return;
    await cancelJob(queue, id);
    toast(`Cancelled job ${id}`);
    button.disabled = true;
    job = null;
    await tick();
  }

  async function replay() {
    const ok = await confirmAction({
      title: `Replay job ${id}?`,
      text: 'It goes back to waiting with its attempts reset (history kept), and runs again.',
      ok: 'Replay',
    });
    if (!ok) return;
    const res = await actOnDead(queue, true, [id]);
    toast(res.done.length ? `Replayed job ${id}` : `Job ${id} was not dead any more`);
    job = null;
    await tick();
  }

  /** @param {JobView} j */
  function render(j) {
    const actions = [];
    if (['waiting', 'delayed', 'retry', 'active'].includes(j.state)) {
      const b = h('button', { class: 'danger' }, 'Cancel job');
      b.addEventListener('click', () => act(b, () => cancel(b, j.state === 'active')));
      actions.push(b);
    }
    if (j.state === 'dead') {
      const b = h('button', {}, 'Replay');
      b.addEventListener('click', () => act(b, replay));
      actions.push(b);
    }
    const fact = (/** @type {string} */ label, /** @type {Child} */ value) => [h('dt', {}, label), h('dd', {}, value ?? '—')];
    const backoff = j.backoff.kind === 'fixed'
      ? `fixed ${fmtDuration(j.backoff.delay_ms)}`
      : `exponential from ${fmtDuration(j.backoff.delay_ms)}${j.backoff.cap_ms ? ` up to ${fmtDuration(j.backoff.cap_ms)}` : ''}`;
    const progress = typeof j.progress === 'number'
      ? h('section', { class: 'panel' }, h('h2', {}, `Progress ${j.progress}%`),
        h('div', { class: 'progress' }, progressBar(j.progress)))
      : null;

    const hasVersion = j.history.some((a) => a.version !== null);
    const hasLogs = j.history.some((a) => a.logs !== null);
    /** @type {(Leaf | Leaf[])[]} */
    const attempts = j.history.map((a) => {
      const row = h('tr', { 'data-attempt': a.attempt },
        h('td', { class: 'num' }, a.attempt),
        h('td', {}, outcomeBadge(a.outcome)),
        clockCell(a.started_at_ms),
        h('td', { class: 'num nowrap' }, fmtDuration(a.finished_at_ms - a.started_at_ms)),
        h('td', { class: 'mono' }, a.host),
        hasVersion ? h('td', { class: 'mono' }, a.version ?? '—') : null,
        h('td', { class: 'error' }, a.error));
      const logs = hasLogs && a.logs !== null
        ? h('tr', { class: 'logs' }, h('td'), h('td', { colspan: hasVersion ? 6 : 5 },
          h('pre', { class: 'payload logs' }, a.logs)))
        : null;
      return [row, logs];
    });
    if (j.state === 'active') {
      const started = j.started_at_ms;
      attempts.push(h('tr', { 'data-attempt': j.attempt, class: 'running' },
        h('td', { class: 'num' }, j.attempt), h('td', {}, stateBadge('active')),
        clockCell(started), h('td', { class: 'num nowrap' }, `running ${fmtDuration(started === null ? null : serverNow() - started)}`),
        h('td', { class: 'mono' }, j.host ?? ''), hasVersion ? h('td') : null,
        h('td', { class: 'muted' }, `lease expires ${fmtTime(j.lease_expires_at_ms)}`)));
    }

    root.replaceChildren();
    append(root, [
      crumbs(h('a', { href: '#/' }, 'Queues'), h('a', { href: `#/queues/${enc(queue)}` }, queue), `job ${id}`),
      title(`Job ${j.id}`, stateBadge(j.state), h('span', { class: 'spacer' }), actions),
      h('div', { class: 'grid2' },
        h('section', { class: 'panel' }, h('h2', {}, 'Job'), h('dl', { class: 'facts' },
          fact('Handler', h('a', { href: `#/handlers/${enc(j.handler)}` }, j.handler)),
          fact('Queue', h('a', { href: `#/queues/${enc(j.queue)}` }, j.queue)),
          fact('State', stateBadge(j.state)),
          fact('Attempt', `${j.attempt} of ${j.max_attempts}`),
          fact('Priority', String(j.priority)),
          fact('Group', j.group),
          fact('Backoff', backoff),
          fact('Timeout', j.timeout_ms === null ? "the handler's" : fmtDuration(j.timeout_ms)),
          fact('Replays', String(j.replays)),
          // Only on a job whose durable steps were deleted while it was dead (docs/costs.md).
          j.steps_dropped ? fact('Steps', j.steps_dropped === 'dead_letter_byte_cap'
            ? "dropped: the queue's dead-letter byte cap"
            : `dropped: ${j.steps_dropped}`) : [])),
        h('section', { class: 'panel' }, h('h2', {}, 'Times'), h('dl', { class: 'facts' },
          fact('Created', fmtTime(j.created_at_ms)),
          fact('Due', j.run_at_ms === null ? null : fmtTime(j.run_at_ms)),
          fact('Started', j.started_at_ms === null ? null : fmtTime(j.started_at_ms)),
          fact('Finished', j.finished_at_ms === null ? null : fmtTime(j.finished_at_ms)),
          fact('Lease expires', j.lease_expires_at_ms === null ? null : fmtTime(j.lease_expires_at_ms)),
          fact('Host', j.host),
          fact('Last failure', j.last_outcome ? outcomeBadge(j.last_outcome) : null),
          fact('Its error', j.last_error),
          // Only on a cancelled job: who cancelled it, and why.
          j.last_outcome === 'cancelled'
            ? fact('Cancelled by', `${j.cancelled_by ?? 'unknown'}${j.cancel_reason ? `: ${j.cancel_reason}` : ''}`)
            : []))),
      progress,
      timeline.el,
      h('section', { class: 'panel' },
        h('h2', {}, 'Attempts', h('span', { class: 'muted' }, `${j.history.length} finished`)),
        attempts.length
          ? h('div', { class: 'table-wrap' }, h('table', { class: 'attempts' },
            h('thead', {}, h('tr', {},
              h('th', { class: 'num' }, '#'), h('th', {}, 'Outcome'), h('th', {}, 'Started'),
              h('th', { class: 'num' }, 'Duration'), h('th', {}, 'Host'),
              hasVersion ? h('th', {}, 'Handler version') : null, h('th', {}, 'Error'))),
            h('tbody', {}, attempts)))
          : h('p', { class: 'empty' }, 'No attempt yet.')),
      h('div', { class: 'grid2' },
        h('section', { class: 'panel' }, h('h2', {}, 'Payload'), preview(j.payload, j.payload_encoding)),
        h('section', { class: 'panel' }, h('h2', {}, 'Result'), preview(j.result, j.result_encoding)))]);
  }

  /** What the timeline was last read for: the job's state and attempt, and when. */
  let timelineRead = { key: '', at: 0 };

  async function tick() {
    // A finished job changes only by an operator's action: no need to re-read it each poll.
    if (gone || (job && ['completed', 'dead'].includes(job.state))) return;
    try {
      job = await getJob(queue, id);
      // The timeline reads the queue's events stream for the job's steps: again when the job
      // moved (state, attempt), else at most every TIMELINE_EVERY_MS.
      const key = `${job.state}/${job.attempt}/${job.history.length}`;
      if (key !== timelineRead.key || Date.now() - timelineRead.at > TIMELINE_EVERY_MS) {
        const view = await getTimeline(queue, id);
        timelineRead = { key, at: Date.now() };
        render(job);
        timeline.update(view);
        return;
      }
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
      root.replaceChildren(crumbs(h('a', { href: '#/' }, 'Queues'), h('a', { href: `#/queues/${enc(queue)}` }, queue), id),
        h('p', { class: 'empty' }, `No job ${id} in queue ${queue}: it was cancelled, purged, or removed by the queue's retention.`));
      gone = true;
      return;
    }
    render(job);
  }

  return { root, tick, destroy: timeline.destroy, nav: 'queues' };
}

/** @param {number} percent */
function progressBar(percent) {
  const bar = h('div');
  bar.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  return bar;
}
