// A blocking HTTP client over the generated wasi:http bindings: see wasmq_http.h.
#include "wasmq_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handler.h"

static const char *error_code_name(uint8_t tag) {
  switch (tag) {
  case WASI_HTTP_TYPES_ERROR_CODE_DNS_TIMEOUT: return "DnsTimeout";
  case WASI_HTTP_TYPES_ERROR_CODE_DNS_ERROR: return "DnsError";
  case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_NOT_FOUND: return "DestinationNotFound";
  case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_UNAVAILABLE: return "DestinationUnavailable";
  case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_IP_PROHIBITED: return "DestinationIpProhibited";
  case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_REFUSED: return "ConnectionRefused";
  case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_TERMINATED: return "ConnectionTerminated";
  case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_TIMEOUT: return "ConnectionTimeout";
  case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_READ_TIMEOUT: return "ConnectionReadTimeout";
  case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED: return "HttpRequestDenied";
  case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_BODY_SIZE: return "HttpRequestBodySize";
  case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_URI_INVALID: return "HttpRequestUriInvalid";
  case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_BODY_SIZE: return "HttpResponseBodySize";
  case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_TIMEOUT: return "HttpResponseTimeout";
  case WASI_HTTP_TYPES_ERROR_CODE_HTTP_PROTOCOL_ERROR: return "HttpProtocolError";
  case WASI_HTTP_TYPES_ERROR_CODE_INTERNAL_ERROR: return "InternalError";
  default: return NULL;
  }
}

static bool fail_code(wq_http_error *err, wasi_http_types_error_code_t *code) {
  const char *name = error_code_name(code->tag);
  err->denied = code->tag == WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED ||
                code->tag == WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_IP_PROHIBITED;
  if (name != NULL) {
    snprintf(err->message, sizeof err->message, "%s", name);
  } else {
    snprintf(err->message, sizeof err->message, "wasi:http error code %u", (unsigned)code->tag);
  }
  wasi_http_types_error_code_free(code);
  return false;
}

static bool fail_with(wq_http_error *err, const char *message) {
  err->denied = false;
  snprintf(err->message, sizeof err->message, "%s", message);
  return false;
}

static handler_string_t borrowed(const char *text, size_t len) {
  handler_string_t s = {(uint8_t *)text, len};
  return s;
}

// Splits `scheme://authority[/path?query]`.
static bool split_url(const char *url, handler_string_t *scheme, handler_string_t *authority,
                      handler_string_t *path) {
  const char *sep = strstr(url, "://");
  if (sep == NULL || sep == url) {
    return false;
  }
  *scheme = borrowed(url, (size_t)(sep - url));
  const char *start = sep + 3;
  const char *slash = start + strcspn(start, "/?");
  if (slash == start) {
    return false;
  }
  *authority = borrowed(start, (size_t)(slash - start));
  *path = *slash == '\0' ? borrowed("/", 1) : borrowed(slash, strlen(slash));
  return true;
}

static bool method_of(const char *name, wasi_http_types_method_t *method) {
  static const struct {
    const char *name;
    uint8_t tag;
  } known[] = {{"GET", WASI_HTTP_TYPES_METHOD_GET},         {"HEAD", WASI_HTTP_TYPES_METHOD_HEAD},
               {"POST", WASI_HTTP_TYPES_METHOD_POST},       {"PUT", WASI_HTTP_TYPES_METHOD_PUT},
               {"DELETE", WASI_HTTP_TYPES_METHOD_DELETE},   {"OPTIONS", WASI_HTTP_TYPES_METHOD_OPTIONS},
               {"PATCH", WASI_HTTP_TYPES_METHOD_PATCH}};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    if (strcmp(name, known[i].name) == 0) {
      method->tag = known[i].tag;
      return true;
    }
  }
  method->tag = WASI_HTTP_TYPES_METHOD_OTHER;
  method->val.other = borrowed(name, strlen(name));
  return true;
}

// Writes `body` to the request's outgoing body and finishes it.
static bool send_body(wasi_http_types_own_outgoing_body_t outgoing, const uint8_t *body,
                      size_t body_len, wq_http_error *err) {
  wasi_http_types_own_output_stream_t stream;
  if (!wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(outgoing),
                                                  &stream)) {
    wasi_http_types_outgoing_body_drop_own(outgoing);
    return fail_with(err, "the request body could not be opened");
  }
  bool ok = true;
  for (size_t at = 0; at < body_len && ok; at += 4096) {
    size_t n = body_len - at < 4096 ? body_len - at : 4096;
    handler_list_u8_t chunk = {(uint8_t *)body + at, n};
    wasi_io_streams_stream_error_t stream_err;
    if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
            wasi_io_streams_borrow_output_stream(stream), &chunk, &stream_err)) {
      wasi_io_streams_stream_error_free(&stream_err);
      ok = false;
    }
  }
  wasi_io_streams_output_stream_drop_own(stream);
  wasi_http_types_error_code_t code;
  if (!wasi_http_types_static_outgoing_body_finish(outgoing, NULL, &code)) {
    return fail_code(err, &code);
  }
  return ok ? true : fail_with(err, "writing the request body failed");
}

// Reads the whole body of `response` into `out`.
static bool read_body(wasi_http_types_borrow_incoming_response_t response, wq_http_response *out,
                      wq_http_error *err) {
  wasi_http_types_own_incoming_body_t incoming;
  if (!wasi_http_types_method_incoming_response_consume(response, &incoming)) {
    return fail_with(err, "the response body could not be read");
  }
  wasi_http_types_own_input_stream_t stream;
  if (!wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(incoming),
                                                   &stream)) {
    wasi_http_types_incoming_body_drop_own(incoming);
    return fail_with(err, "the response body could not be read");
  }
  bool ok = true;
  size_t cap = 0;
  while (ok) {
    handler_list_u8_t chunk;
    wasi_io_streams_stream_error_t stream_err;
    if (!wasi_io_streams_method_input_stream_blocking_read(
            wasi_io_streams_borrow_input_stream(stream), 65536, &chunk, &stream_err)) {
      if (stream_err.tag != WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
        ok = fail_with(err, "reading the response body failed");
      }
      wasi_io_streams_stream_error_free(&stream_err);
      break;
    }
    if (out->body_len + chunk.len > cap) {
      size_t want = (out->body_len + chunk.len) * 2;
      uint8_t *grown = realloc(out->body, want);
      if (grown == NULL) {
        handler_list_u8_free(&chunk);
        ok = fail_with(err, "out of memory");
        break;
      }
      out->body = grown;
      cap = want;
    }
    if (chunk.len > 0) {
      memcpy(out->body + out->body_len, chunk.ptr, chunk.len);
      out->body_len += chunk.len;
    }
    handler_list_u8_free(&chunk);
  }
  wasi_io_streams_input_stream_drop_own(stream);
  wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(incoming));
  return ok;
}

bool wq_http_request(const char *method, const char *url, const wq_header *headers,
                     size_t header_count, const uint8_t *body, size_t body_len,
                     wq_http_response *out, wq_http_error *err) {
  memset(out, 0, sizeof *out);
  handler_string_t scheme_text, authority, path;
  if (!split_url(url, &scheme_text, &authority, &path)) {
    return fail_with(err, "not an absolute http(s) url");
  }

  wasi_http_types_tuple2_field_name_field_value_t *entries =
      calloc(header_count ? header_count : 1, sizeof *entries);
  if (entries == NULL) {
    return fail_with(err, "out of memory");
  }
  for (size_t i = 0; i < header_count; i++) {
    entries[i].f0 = borrowed(headers[i].name, strlen(headers[i].name));
    entries[i].f1.ptr = (uint8_t *)headers[i].value;
    entries[i].f1.len = strlen(headers[i].value);
  }
  wasi_http_types_list_tuple2_field_name_field_value_t list = {entries, header_count};
  wasi_http_types_own_fields_t fields;
  wasi_http_types_header_error_t header_err;
  bool fields_ok = wasi_http_types_static_fields_from_list(&list, &fields, &header_err);
  free(entries);
  if (!fields_ok) {
    return fail_with(err, "a request header is invalid or forbidden");
  }

  wasi_http_types_own_outgoing_request_t request = wasi_http_types_constructor_outgoing_request(fields);
  wasi_http_types_borrow_outgoing_request_t req = wasi_http_types_borrow_outgoing_request(request);
  wasi_http_types_method_t m;
  method_of(method, &m);
  wasi_http_types_scheme_t scheme;
  if (scheme_text.len == 4 && memcmp(scheme_text.ptr, "http", 4) == 0) {
    scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTP;
  } else if (scheme_text.len == 5 && memcmp(scheme_text.ptr, "https", 5) == 0) {
    scheme.tag = WASI_HTTP_TYPES_SCHEME_HTTPS;
  } else {
    scheme.tag = WASI_HTTP_TYPES_SCHEME_OTHER;
    scheme.val.other = scheme_text;
  }
  wasi_http_types_own_outgoing_body_t outgoing;
  if (!wasi_http_types_method_outgoing_request_set_method(req, &m) ||
      !wasi_http_types_method_outgoing_request_set_scheme(req, &scheme) ||
      !wasi_http_types_method_outgoing_request_set_authority(req, &authority) ||
      !wasi_http_types_method_outgoing_request_set_path_with_query(req, &path) ||
      !wasi_http_types_method_outgoing_request_body(req, &outgoing)) {
    wasi_http_types_outgoing_request_drop_own(request);
    return fail_with(err, "the url or method is invalid");
  }

  wasi_http_outgoing_handler_own_future_incoming_response_t future;
  wasi_http_outgoing_handler_error_code_t code;
  if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
    wasi_http_types_outgoing_body_drop_own(outgoing);
    return fail_code(err, &code);
  }
  if (!send_body(outgoing, body, body_len, err)) {
    wasi_http_types_future_incoming_response_drop_own(future);
    return false;
  }

  wasi_http_types_borrow_future_incoming_response_t fut =
      wasi_http_types_borrow_future_incoming_response(future);
  wasi_http_types_result_result_own_incoming_response_error_code_void_t ready;
  while (!wasi_http_types_method_future_incoming_response_get(fut, &ready)) {
    wasi_io_poll_own_pollable_t pollable = wasi_http_types_method_future_incoming_response_subscribe(fut);
    wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(pollable));
    wasi_io_poll_pollable_drop_own(pollable);
  }
  wasi_http_types_future_incoming_response_drop_own(future);
  if (ready.is_err) {
    return fail_with(err, "the response was already taken");
  }
  if (ready.val.ok.is_err) {
    return fail_code(err, &ready.val.ok.val.err);
  }
  wasi_http_types_own_incoming_response_t response = ready.val.ok.val.ok;
  wasi_http_types_borrow_incoming_response_t resp = wasi_http_types_borrow_incoming_response(response);
  out->status = wasi_http_types_method_incoming_response_status(resp);
  bool ok = read_body(resp, out, err);
  wasi_http_types_incoming_response_drop_own(response);
  if (!ok) {
    wq_http_response_free(out);
  }
  return ok;
}

void wq_http_response_free(wq_http_response *response) {
  free(response->body);
  response->body = NULL;
  response->body_len = 0;
}

char *wq_config_get(const char *key) {
  handler_string_t k = borrowed(key, strlen(key));
  handler_option_string_t value;
  wasi_config_store_error_t store_err;
  if (!wasi_config_store_get(&k, &value, &store_err)) {
    wasi_config_store_error_free(&store_err);
    return NULL;
  }
  if (!value.is_some) {
    return NULL;
  }
  char *text = malloc(value.val.len + 1);
  if (text != NULL) {
    memcpy(text, value.val.ptr, value.val.len);
    text[value.val.len] = '\0';
  }
  handler_option_string_free(&value);
  return text;
}
