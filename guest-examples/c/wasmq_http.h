// A small blocking HTTP client over the `wasi:http` bindings that `wit-bindgen c` generates for
// the handler world (handler.h; the world imports `wasi:http/outgoing-handler` since
// wasmq:job@0.1.2), and config values and secrets through `wasi:config/store`.
#ifndef WASMQ_HTTP_H
#define WASMQ_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// One request header.
typedef struct {
  const char *name;
  const char *value;
} wq_header;

// An answer, read in full; free it with wq_http_response_free.
typedef struct {
  uint16_t status;
  uint8_t *body;
  size_t body_len;
} wq_http_response;

// Why a request got no answer.
typedef struct {
  // True when the host refused it (not granted: HttpRequestDenied, or an address it may not
  // reach: DestinationIpProhibited): nothing was sent.
  bool denied;
  // The wasi:http error code's name (or what else went wrong), NUL-terminated.
  char message[128];
} wq_http_error;

// Sends `method` (e.g. "POST") to `url` (`http[s]://authority/path?query`) with the headers and
// body given, and reads the whole answer into `out`. Returns false, with `err` set, when there
// is no answer; an answer of any status returns true.
bool wq_http_request(const char *method, const char *url, const wq_header *headers,
                     size_t header_count, const uint8_t *body, size_t body_len,
                     wq_http_response *out, wq_http_error *err);

void wq_http_response_free(wq_http_response *response);

// The config value or secret `key` as a malloc'd NUL-terminated string (free it), or NULL when
// the handler version was not given it.
char *wq_config_get(const char *key);

#endif
