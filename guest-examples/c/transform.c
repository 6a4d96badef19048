// `transform`: `{"numbers":[1,2,3]}` -> `{"count":3,"sum":6,"max":3}`.
//
// The output is canonical and byte-identical in every language of guest-examples/ (see
// guest-examples/README.md): no spaces, keys in that order, integers in decimal, `max` null
// for an empty list. Numbers must be integers within +-(2^53 - 1), the range every JSON parser
// holds exactly, and so must every partial sum. A payload that is not JSON fails with
// "invalid json: ..."; JSON of the wrong shape fails with "invalid input: ...". The payload
// `{"spin":true}` busy-loops forever: a handler that only a deadline stops.
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "json.h"
#include "wasmq.h"

#define MAX_SAFE 9007199254740991LL
#define NOT_INTEGERS "invalid input: \"numbers\" must be an array of integers"

// An integral number within +-MAX_SAFE; 1.0 and 2e1 count, as they do for JavaScript.
static bool safe_integer(const json_value *v, int64_t *out) {
  if (v->kind != JSON_NUMBER || v->number != trunc(v->number) || fabs(v->number) > MAX_SAFE) {
    return false;
  }
  // -0 becomes 0, as every other language prints it.
  *out = (int64_t)v->number;
  return true;
}

static bool transform(const json_value *doc, handler_list_u8_t *ret, handler_job_error_t *err) {
  const json_value *spin = json_get(doc, "spin");
  if (spin != NULL && spin->kind == JSON_TRUE) {
    wq_log(WASMQ_JOB_CONTEXT_LEVEL_WARN, "spinning until the deadline");
    for (volatile uint64_t x = 0;; x++) {
    }
  }
  const json_value *numbers = json_get(doc, "numbers");
  if (numbers == NULL || numbers->kind != JSON_ARRAY) {
    return wq_fail(err, "%s", NOT_INTEGERS);
  }
  wasmq_job_context_progress(50);
  int64_t sum = 0;
  int64_t max = 0;
  for (size_t i = 0; i < numbers->count; i++) {
    int64_t n;
    if (!safe_integer(&numbers->items[i], &n)) {
      return wq_fail(err, "%s", NOT_INTEGERS);
    }
    // Both terms are within +-(2^53 - 1), so the addition cannot overflow.
    sum += n;
    if (sum > MAX_SAFE || sum < -MAX_SAFE) {
      return wq_fail(err, "invalid input: sum out of range");
    }
    max = i == 0 || n > max ? n : max;
  }
  wq_log(WASMQ_JOB_CONTEXT_LEVEL_INFO, "transform %zu numbers", numbers->count);
  wasmq_job_context_progress(100);
  char out[96];
  char max_text[24] = "null";
  if (numbers->count > 0) {
    snprintf(max_text, sizeof max_text, "%" PRId64, max);
  }
  snprintf(out, sizeof out, "{\"count\":%zu,\"sum\":%" PRId64 ",\"max\":%s}", numbers->count, sum,
           max_text);
  return wq_ok(ret, out);
}

bool exports_handler_handle(handler_job_t *job, handler_list_u8_t *ret, handler_job_error_t *err) {
  json_value doc;
  char why[160];
  bool ok;
  if (!json_parse(job->payload.ptr, job->payload.len, &doc, why, sizeof why)) {
    ok = wq_fail(err, "invalid json: %s", why);
  } else {
    ok = transform(&doc, ret, err);
    json_free(&doc);
  }
  handler_job_free(job);
  return ok;
}
