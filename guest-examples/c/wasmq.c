// Helpers over the generated bindings: see wasmq.h.
#include "wasmq.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// A malloc'd, printf-formatted string, or a fixed message when out of memory.
static char *vformat(const char *fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(NULL, 0, fmt, copy);
  va_end(copy);
  char *text = n < 0 ? NULL : malloc((size_t)n + 1);
  if (text == NULL) {
    return NULL;
  }
  vsnprintf(text, (size_t)n + 1, fmt, args);
  return text;
}

static void set_string(handler_string_t *out, char *text) {
  if (text == NULL) {
    handler_string_dup(out, "out of memory");
  } else {
    out->ptr = (uint8_t *)text;
    out->len = strlen(text);
  }
}

void wq_log(wasmq_job_context_level_t level, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  char *text = vformat(fmt, args);
  va_end(args);
  handler_string_t message;
  handler_string_set(&message, text ? text : "out of memory");
  wasmq_job_context_log(level, &message);
  free(text);
}

bool wq_ok(handler_list_u8_t *ret, const char *text) {
  handler_string_t s;
  handler_string_dup(&s, text);
  ret->ptr = s.ptr;
  ret->len = s.len;
  return true;
}

bool wq_fail(handler_job_error_t *err, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  err->tag = WASMQ_JOB_TYPES_JOB_ERROR_FAIL;
  set_string(&err->val.fail, vformat(fmt, args));
  va_end(args);
  return false;
}

bool wq_retry(handler_job_error_t *err, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  err->tag = WASMQ_JOB_TYPES_JOB_ERROR_RETRY;
  set_string(&err->val.retry, vformat(fmt, args));
  va_end(args);
  return false;
}
