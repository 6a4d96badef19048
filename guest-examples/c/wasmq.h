// Small helpers over the bindings that `wit-bindgen c` generates for the handler world
// (handler.h): formatted log lines and building results and errors. Everything returned to
// the host is malloc'd, because the generated post-return glue frees it.
#ifndef WASMQ_EXAMPLE_H
#define WASMQ_EXAMPLE_H

#include <stdbool.h>

#include "handler.h"

// Writes a printf-formatted line to the job's log.
void wq_log(wasmq_job_context_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// Sets `ret` to a copy of the NUL-terminated `text`; returns true (handle's "ok").
bool wq_ok(handler_list_u8_t *ret, const char *text);

// Sets `err` to a permanent failure with a printf-formatted message; returns false.
bool wq_fail(handler_job_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Sets `err` to a transient failure (retry) with a printf-formatted message; returns false.
bool wq_retry(handler_job_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
