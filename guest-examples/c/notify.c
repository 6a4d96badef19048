// `notify`: POSTs `{"job": <id>, "payload": <payload>}` to the config value `url`, with the
// secret `NOTIFY_TOKEN` as `Authorization: Bearer <token>` (both read through
// `wasi:config/store`). A 2xx answer's body is the result; a 5xx asks for a retry, a 4xx fails
// the job; a request the host denies fails it. Uses wasmq_http.h, a small client over the
// generated wasi:http bindings. The canonical behaviour every language follows is in
// guest-examples/README.md.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "wasmq.h"
#include "wasmq_http.h"

// Appends `text` (`len` bytes) to `out` as a JSON string; `out` has room for 6 * len + 3 bytes.
static size_t json_string(char *out, const uint8_t *text, size_t len) {
  size_t n = 0;
  out[n++] = '"';
  for (size_t i = 0; i < len; i++) {
    uint8_t c = text[i];
    if (c == '"' || c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)c;
    } else if (c < 0x20) {
      n += (size_t)sprintf(out + n, "\\u%04x", c);
    } else {
      out[n++] = (char)c;
    }
  }
  out[n++] = '"';
  return n;
}

static bool notify(const handler_job_t *job, char *url, char *token, handler_list_u8_t *ret,
                   handler_job_error_t *err) {
  if (url == NULL) {
    return wq_fail(err, "no url configured");
  }
  if (token == NULL) {
    return wq_fail(err, "no NOTIFY_TOKEN secret");
  }
  json_value doc;
  char why[160];
  if (!json_parse(job->payload.ptr, job->payload.len, &doc, why, sizeof why)) {
    return wq_fail(err, "invalid json: %s", why);
  }
  json_free(&doc);

  // {"job":<id>,"payload":<the payload as given: it is JSON>}
  size_t cap = 6 * job->id.len + job->payload.len + 32;
  char *body = malloc(cap);
  if (body == NULL) {
    return wq_retry(err, "out of memory");
  }
  size_t n = (size_t)sprintf(body, "{\"job\":");
  n += json_string(body + n, job->id.ptr, job->id.len);
  n += (size_t)sprintf(body + n, ",\"payload\":");
  memcpy(body + n, job->payload.ptr, job->payload.len);
  n += job->payload.len;
  body[n++] = '}';

  char *bearer = malloc(strlen(token) + 8);
  if (bearer == NULL) {
    free(body);
    return wq_retry(err, "out of memory");
  }
  sprintf(bearer, "Bearer %s", token);
  wq_header headers[] = {{"content-type", "application/json"}, {"authorization", bearer}};
  wq_http_response response;
  wq_http_error http_err;
  bool answered = wq_http_request("POST", url, headers, 2, (const uint8_t *)body, n, &response,
                                  &http_err);
  free(body);
  free(bearer);
  if (!answered) {
    return http_err.denied ? wq_fail(err, "request failed: %s", http_err.message)
                           : wq_retry(err, "request failed: %s", http_err.message);
  }
  uint16_t status = response.status;
  if (status < 200 || status > 299) {
    wq_http_response_free(&response);
    return status >= 500 && status <= 599 ? wq_retry(err, "HTTP %u", (unsigned)status)
                                          : wq_fail(err, "HTTP %u", (unsigned)status);
  }
  // The result is handed to the host, which frees it with the post-return glue (malloc'd).
  ret->ptr = response.body != NULL ? response.body : malloc(1);
  ret->len = response.body_len;
  return true;
}

bool exports_handler_handle(handler_job_t *job, handler_list_u8_t *ret, handler_job_error_t *err) {
  char *url = wq_config_get("url");
  char *token = wq_config_get("NOTIFY_TOKEN");
  bool ok = notify(job, url, token, ret, err);
  free(url);
  free(token);
  handler_job_free(job);
  return ok;
}
