// @ts-check
// The JSON API (docs/api.md) as the dashboard calls it: one function per endpoint it uses, each
// typed with the shape the server answers with. The typedefs below mirror the utoipa schemas
// of host/src/api/{queues,handlers,schedules,timeline,durations}.rs (`/openapi.json`); change them together.

import { showBanner } from './chrome.js';
import { noteServerDate } from './clock.js';
import { token } from './token.js';

const REQUEST_TIMEOUT_MS = 15000;

/** @typedef {'waiting' | 'delayed' | 'active' | 'retry' | 'completed' | 'dead'} JobState */
/** How a byte field (payload, result) is written: as its UTF-8 text, or base64.
 *  @typedef {'utf8' | 'base64'} Encoding */

/**
 * A job's counts per state (`CountsView`).
 * @typedef {object} CountsView
 * @property {number} waiting
 * @property {number} delayed
 * @property {number} active
 * @property {number} retry
 * @property {number} completed
 * @property {number} dead
 */

/**
 * A queue's settings (`QueueConfigView`).
 * @typedef {object} QueueConfigView
 * @property {number} max_payload_bytes
 * @property {number} max_result_bytes
 * @property {number | null} completed_keep
 * @property {number | null} completed_max_age_ms
 * @property {number} events_maxlen 0 when the queue writes no events
 * @property {string | null} rate
 * @property {string | null} group_rate
 * @property {number | null} group_concurrency most jobs of one group running at once
 */

/**
 * `GET /api/queues/{queue}` (`QueueView`).
 * @typedef {object} QueueView
 * @property {string} name
 * @property {boolean} paused
 * @property {CountsView} counts
 * @property {QueueConfigView} config
 */

/**
 * `GET /api/queues` (`QueueList`).
 * @typedef {object} QueueList
 * @property {string[]} queues sorted names
 * @property {boolean} complete false when the search of Redis stopped at its bound
 */

/**
 * A job's retry policy (`BackoffView`).
 * @typedef {object} BackoffView
 * @property {'fixed' | 'exponential'} kind
 * @property {number} delay_ms the delay (fixed) or the base delay (exponential)
 * @property {number | null} cap_ms longest delay (exponential only)
 * @property {number} jitter
 */

/**
 * One finished attempt of a job (`AttemptView`).
 * @typedef {object} AttemptView
 * @property {number} attempt
 * @property {string} outcome `ok`, or the failure class (`retry`, `fail`, `timeout`...)
 * @property {string} error
 * @property {string} host
 * @property {number} started_at_ms
 * @property {number} finished_at_ms
 * @property {string | null} version the handler version that ran it; null when unknown
 * @property {string | null} logs what it logged; null when nothing
 * @property {number | null} progress
 */

/**
 * A job (`JobView`). Times are ms since the Unix epoch on the Redis clock.
 * @typedef {object} JobView
 * @property {string} id
 * @property {string} queue
 * @property {string} handler
 * @property {JobState} state
 * @property {number} priority
 * @property {number} attempt attempts started so far
 * @property {number} max_attempts
 * @property {BackoffView} backoff
 * @property {{ max_attempts: boolean, backoff: boolean }} own_policy
 * @property {number | null} timeout_ms null: the handler's default
 * @property {number} created_at_ms
 * @property {number | null} run_at_ms
 * @property {number | null} started_at_ms
 * @property {number | null} finished_at_ms
 * @property {number | null} lease_expires_at_ms
 * @property {string | null} host
 * @property {string | null} group
 * @property {string} payload
 * @property {Encoding} payload_encoding
 * @property {string | null} result
 * @property {Encoding | null} result_encoding
 * @property {string | null} last_error
 * @property {string | null} last_outcome
 * @property {number} replays
 * @property {string | null} steps_dropped why its steps were deleted while dead, if they were
 * @property {string | null} cancelled_by who cancelled it (`api`, `cli`, a client's name), if it was
 * @property {string | null} cancel_reason why it was cancelled, if a reason was given
 * @property {number | null} progress
 * @property {AttemptView[]} history
 */

/**
 * A page of a queue's jobs in one state (`JobPage`); the dead-letter queue's pages too.
 * @typedef {object} JobPage
 * @property {JobState} state
 * @property {number} offset
 * @property {number} limit
 * @property {JobView[]} jobs
 */

/**
 * A job a search matched whose key does not decode (`MalformedView`).
 * @typedef {object} MalformedView
 * @property {string} id
 * @property {string} reason
 */

/**
 * One page of a job search (`SearchResponse`, `GET /api/queues/{queue}/search`).
 * @typedef {object} SearchResponse
 * @property {JobView[]} jobs
 * @property {MalformedView[]} malformed
 * @property {number} examined set entries the page examined
 * @property {string | null} cursor the next page's, null when the search is over
 */

/**
 * What a search looks for (`SearchQuery`): each given filter must match.
 * @typedef {object} JobFilter
 * @property {string} [text] payload contains
 * @property {string} [handler]
 * @property {string} [group]
 * @property {string} [id_prefix]
 */

/**
 * The outcome of a pause or resume of a queue (`PauseResponse`).
 * @typedef {object} QueuePauseResponse
 * @property {string} queue
 * @property {boolean} paused
 * @property {boolean} changed false when it already was
 */

/**
 * The outcome of a DLQ replay or purge (`DlqResponse`).
 * @typedef {object} DlqResponse
 * @property {string[]} done
 * @property {{ id: string, state: string }[]} skipped the jobs named that were not dead
 */

/**
 * `DELETE /api/queues/{queue}/jobs/{id}` (`CancelResponse`).
 * @typedef {object} CancelResponse
 * @property {string} id
 * @property {boolean} cancelled
 */

/**
 * One transition event (`EventView`): `id` is the stream id, `<ms>-<n>` on the Redis clock.
 * @typedef {object} EventView
 * @property {string} id
 * @property {string} event enqueued, promoted, active, completed, retried, dead, ...
 * @property {{ id: string, attempt: number }[]} jobs
 */

/**
 * A page of events (`EventPage`).
 * @typedef {object} EventPage
 * @property {EventView[]} events
 * @property {string | null} last_id the id to read on after
 */

/**
 * One version of a handler (`VersionView`).
 * @typedef {object} VersionView
 * @property {string} name
 * @property {number} version
 * @property {boolean} current
 * @property {string} sha256
 * @property {number} size bytes
 * @property {number} deployed_at_ms
 * @property {number} memory bytes
 * @property {number} timeout_ms
 * @property {number | null} fuel
 * @property {number | null} max_attempts
 * @property {string | null} backoff
 * @property {number | null} concurrency
 * @property {string | null} throttle
 * @property {string[]} on events it is subscribed to
 * @property {string | null} on_queue
 * @property {string[]} allow_outbound outbound HTTP patterns
 * @property {string[]} config keys of its config values (never the values)
 * @property {string[]} secrets names of its secrets
 * @property {Record<string, number>} http_limits its own outbound HTTP limits
 * @property {string[]} kv key-value buckets, with their options
 * @property {Record<string, string>} databases each database's URL source (`secret:NAME`)
 * @property {string[]} may_enqueue queues (and handlers) its child jobs may go to besides its own
 * @property {string[]} may_enqueue_raw_ids targets where its child jobs keep the ids it gives
 */

/**
 * `GET /api/handlers/{name}/versions` (`VersionList`).
 * @typedef {object} VersionList
 * @property {string} name
 * @property {number} current
 * @property {VersionView[]} versions oldest first
 */

/**
 * One future run of a schedule (`NextRun`): RFC 3339, in its zone and in UTC.
 * @typedef {object} NextRun
 * @property {string} local
 * @property {string} utc
 */

/**
 * A schedule and its next runs (`ScheduleView`).
 * @typedef {object} ScheduleView
 * @property {string} name
 * @property {string} cron
 * @property {string} tz
 * @property {string} queue
 * @property {string} handler
 * @property {string} payload
 * @property {number} catch_up
 * @property {boolean} paused
 * @property {number} created_at_ms
 * @property {number} last_tick_ms
 * @property {NextRun[]} next_runs
 */

/**
 * The outcome of a pause or resume of a schedule (`PauseResponse` of schedules.rs).
 * @typedef {object} SchedulePauseResponse
 * @property {string} name
 * @property {boolean} paused
 * @property {boolean} changed
 */

/**
 * One span or point of a job's timeline (`Segment` of timeline.rs). Times are ms on the Redis
 * clock; a point has `start_ms === end_ms`.
 * @typedef {object} Segment
 * @property {'enqueued' | 'wait' | 'attempt' | 'call' | 'sleep' | 'step' | 'finished'} kind
 * @property {number} start_ms
 * @property {number} end_ms
 * @property {boolean} open still going: `end_ms` is the time it was read at
 * @property {number | null} attempt
 * @property {string | null} outcome an attempt's (`ok`, `retry`, ..., `running`); a finish's
 *   state; a call's status code, or `denied`, `timeout`, `error`, `ok` (a SQL statement)
 * @property {string | null} reason a wait's: queued, retry, after_sleep, replayed
 * @property {string | null} name a step's or sleep's; a call's (`GET http://host:port`, `sql SELECT (db)`)
 * @property {'http' | 'sql' | string | null} call_kind a call's kind
 * @property {number | null} calls_dropped an attempt's calls past the 50 recorded
 * @property {string | null} error an attempt's error message
 * @property {string | null} host an attempt's host
 * @property {number | null} due_ms when an open wait is due
 */

/**
 * `GET /api/queues/{queue}/jobs/{id}/timeline` (`TimelineView`).
 * @typedef {object} TimelineView
 * @property {string} id
 * @property {string} queue
 * @property {string} handler
 * @property {JobState} state
 * @property {number} now_ms
 * @property {Segment[]} segments in time order
 * @property {boolean} steps_complete false when some step saves may be missing
 * @property {number | null} steps_since_ms the events stream's oldest time, when after creation
 * @property {boolean} calls_recorded every attempt's calls are drawn: false while one runs, or
 *   when one ended by lease expiry (its calls were lost with its host)
 */

/**
 * Percentiles of attempt durations, in ms (`Percentiles`).
 * @typedef {object} Percentiles
 * @property {number} count
 * @property {number} p50_ms
 * @property {number} p95_ms
 * @property {number} p99_ms
 * @property {number} max_ms
 */

/**
 * One handler's attempt durations over a window (`HandlerDurations`): the window's
 * percentiles, and each non-empty bucket's.
 * @typedef {Percentiles & { handler: string, buckets: (Percentiles & { start_ms: number })[] }} HandlerDurations
 */

/**
 * `GET /api/queues/{queue}/durations` (`DurationsView`).
 * @typedef {object} DurationsView
 * @property {string} queue
 * @property {number} since_ms
 * @property {number} until_ms
 * @property {number} bucket_ms
 * @property {number} jobs_read
 * @property {number} jobs_skipped left out: a history too large to read, or a job gone as it was read
 * @property {boolean} truncated more jobs finished in the window than were read
 * @property {HandlerDurations[]} handlers
 */

/** A refused or failed call: `status` is the HTTP status, 0 when there was no answer. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Whether `err` is the API's answer `status` (404: no such thing). */
export const isStatus = (/** @type {unknown} */ err, /** @type {number} */ status) =>
  err instanceof ApiError && err.status === status;

const enc = encodeURIComponent;

/**
 * One call. The answer's JSON is taken to be the shape the caller names (`T`): the server
 * answers with the schemas above, and the dashboard ships in the same binary.
 * @template T
 * @param {string} path
 * @param {{ method?: string, body?: unknown }} [options]
 * @returns {Promise<T>}
 */
async function api(path, { method = 'GET', body } = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json' };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  /** @type {RequestInit} */
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, { ...init, signal: controller.signal });
  } catch (err) {
    const { name, message } = err instanceof Error ? err : { name: '', message: String(err) };
    throw new ApiError(0, name === 'AbortError'
      ? `the server did not answer within ${REQUEST_TIMEOUT_MS / 1000} s`
      : `cannot reach the server (${message})`);
  } finally {
    clearTimeout(timer);
  }
  noteServerDate(response.headers.get('Date'));
  const text = await response.text();
  /** @type {unknown} */
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    // A refusal's body is `ErrorBody`, `{"error": "..."}`; a proxy's may be anything.
    const error = data !== null && typeof data === 'object' && 'error' in data ? data.error : null;
    const message = (typeof error === 'string' && error) || `${response.status} ${response.statusText}`;
    if (response.status === 401) {
      showBanner(`The server needs the API token for this: enter it at the top right. (${message})`);
    }
    throw new ApiError(response.status, message);
  }
  return /** @type {T} */ (data);
}

/** @returns {Promise<QueueList>} */
export const listQueues = () => api('/api/queues');

/** @param {string} queue @returns {Promise<QueueView>} */
export const getQueue = (queue) => api(`/api/queues/${enc(queue)}`);

/**
 * @param {string} queue
 * @param {boolean} pause true to pause, false to resume
 * @returns {Promise<QueuePauseResponse>}
 */
export const pauseQueue = (queue, pause) =>
  api(`/api/queues/${enc(queue)}/${pause ? 'pause' : 'resume'}`, { method: 'POST' });

/**
 * @param {string} queue
 * @param {JobState} state
 * @param {number} offset
 * @param {number} limit
 * @returns {Promise<JobPage>}
 */
export const listJobs = (queue, state, offset, limit) =>
  api(`/api/queues/${enc(queue)}/jobs?state=${enc(state)}&offset=${offset}&limit=${limit}`);

/**
 * One page of a search of a queue's jobs in `state`, from `cursor` (null: the first page).
 * @param {string} queue
 * @param {JobState} state
 * @param {JobFilter} filter
 * @param {string | null} cursor
 * @param {number} limit
 * @returns {Promise<SearchResponse>}
 */
export const searchJobs = (queue, state, filter, cursor, limit) => {
  const query = new URLSearchParams({ state, limit: String(limit) });
  for (const [name, value] of Object.entries(filter)) if (value) query.set(name, value);
  if (cursor) query.set('cursor', cursor);
  return api(`/api/queues/${enc(queue)}/search?${query}`);
};

/** @param {string} queue @param {number} offset @param {number} limit @returns {Promise<JobPage>} */
export const listDead = (queue, offset, limit) =>
  api(`/api/queues/${enc(queue)}/dlq?offset=${offset}&limit=${limit}`);

/**
 * Replays (`replay`) or purges dead jobs.
 * @param {string} queue
 * @param {boolean} replay
 * @param {string[]} ids
 * @returns {Promise<DlqResponse>}
 */
export const actOnDead = (queue, replay, ids) =>
  api(`/api/queues/${enc(queue)}/dlq/${replay ? 'replay' : 'purge'}`, { method: 'POST', body: { ids } });

/** @param {string} queue @param {string} id @returns {Promise<JobView>} */
export const getJob = (queue, id) => api(`/api/queues/${enc(queue)}/jobs/${enc(id)}`);

/** @param {string} queue @param {string} id @returns {Promise<TimelineView>} */
export const getTimeline = (queue, id) => api(`/api/queues/${enc(queue)}/jobs/${enc(id)}/timeline`);

/** @param {string} queue @param {number} windowS @param {number} bucketS @returns {Promise<DurationsView>} */
export const getDurations = (queue, windowS, bucketS) =>
  api(`/api/queues/${enc(queue)}/durations?window_s=${windowS}&bucket_s=${bucketS}`);

/** @param {string} queue @param {string} id @returns {Promise<CancelResponse>} */
export const cancelJob = (queue, id) =>
  api(`/api/queues/${enc(queue)}/jobs/${enc(id)}`, { method: 'DELETE' });

/**
 * @param {string} queue
 * @param {string} after a stream id
 * @param {number} limit
 * @returns {Promise<EventPage>}
 */
export const readEvents = (queue, after, limit) =>
  api(`/api/queues/${enc(queue)}/events?after=${enc(after)}&limit=${limit}`);

/** @returns {Promise<{ handlers: VersionView[] }>} */
export const listHandlers = () => api('/api/handlers');

/** @param {string} name @returns {Promise<VersionList>} */
export const handlerVersions = (name) => api(`/api/handlers/${enc(name)}/versions`);

/** @param {string} name @param {number} version @returns {Promise<VersionView>} */
export const rollback = (name, version) =>
  api(`/api/handlers/${enc(name)}/rollback`, { method: 'POST', body: { version } });

/** @returns {Promise<{ schedules: ScheduleView[] }>} */
export const listSchedules = () => api('/api/schedules');

/**
 * @param {string} name
 * @param {boolean} pause true to pause, false to resume
 * @returns {Promise<SchedulePauseResponse>}
 */
export const pauseSchedule = (name, pause) =>
  api(`/api/schedules/${enc(name)}/${pause ? 'pause' : 'resume'}`, { method: 'POST' });

/** Every job state, in the order the dashboard shows them. @type {readonly JobState[]} */
export const STATES = ['waiting', 'delayed', 'active', 'retry', 'completed', 'dead'];

/** @param {string} s @returns {s is JobState} */
export const isState = (s) => /** @type {readonly string[]} */ (STATES).includes(s);
