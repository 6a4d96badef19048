// `notify`: POSTs `{"job": <id>, "payload": <payload>}` with `fetch()` to the config value
// `url`, with the secret `NOTIFY_TOKEN` as `Authorization: Bearer <token>` (both read through
// `wasi:config/store`). A 2xx answer's body is the result; a 5xx asks for a retry, a 4xx fails
// the job; a request the host denies fails it. The canonical behaviour every language follows
// is in guest-examples/README.md.
//
// `handle` is `async`: componentize-js runs the event loop until the promise settles. Built
// with fetch left on (no `--disable http fetch-event`), so the component imports `wasi:http`.
import { get } from "wasi:config/store@0.2.0-rc.1";

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function fail(message) {
  return { tag: "err", val: { tag: "fail", val: message } };
}

function retry(message) {
  return { tag: "err", val: { tag: "retry", val: message } };
}

// A key the handler version was not given reads as none (undefined); so does a store error.
function config(key) {
  try {
    return get(key) ?? undefined;
  } catch {
    return undefined;
  }
}

export async function handle(job) {
  const url = config("url");
  if (url === undefined) return fail("no url configured");
  const token = config("NOTIFY_TOKEN");
  if (token === undefined) return fail("no NOTIFY_TOKEN secret");
  let payload;
  try {
    payload = JSON.parse(UTF8.decode(job.payload));
  } catch (e) {
    return fail(`invalid json: ${e.message}`);
  }
  let response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ job: job.id, payload }),
    });
  } catch (e) {
    // fetch() rejects every network failure with the same TypeError ("NetworkError when
    // attempting to fetch resource"): a denial by the host (not granted) cannot be told from a
    // refused connection, so both ask for a retry; the host logs each denial. Should the
    // message ever name the wasi:http error code of a denial, the job fails at once.
    const message = `request failed: ${e.message ?? e}`;
    return /HttpRequestDenied|DestinationIpProhibited/.test(message) ? fail(message) : retry(message);
  }
  const body = new Uint8Array(await response.arrayBuffer());
  if (response.status >= 500 && response.status <= 599) return retry(`HTTP ${response.status}`);
  if (response.status < 200 || response.status > 299) return fail(`HTTP ${response.status}`);
  return body;
}
