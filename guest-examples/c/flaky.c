// `flaky`: fails transiently on attempt 1 and succeeds from attempt 2 on.
//
// Returns `retry` on attempt 1 and `{"attempt":N}` on attempt N >= 2; the payload
// `{"fail":true}` fails permanently on any attempt.
#include <stdio.h>

#include "json.h"
#include "wasmq.h"

static bool asks_to_fail(const handler_list_u8_t *payload) {
  json_value doc;
  char why[160];
  if (!json_parse(payload->ptr, payload->len, &doc, why, sizeof why)) {
    return false;
  }
  const json_value *fail = json_get(&doc, "fail");
  bool yes = fail != NULL && fail->kind == JSON_TRUE;
  json_free(&doc);
  return yes;
}

static bool flaky(const handler_job_t *job, handler_list_u8_t *ret, handler_job_error_t *err) {
  wq_log(WASMQ_JOB_CONTEXT_LEVEL_INFO, "flaky attempt %u of %u", (unsigned)job->attempt,
         (unsigned)job->max_attempts);
  if (asks_to_fail(&job->payload)) {
    wq_log(WASMQ_JOB_CONTEXT_LEVEL_ERROR, "the payload asks to fail");
    return wq_fail(err, "failed on purpose: the payload asks to fail");
  }
  if (job->attempt <= 1) {
    wasmq_job_context_progress(0);
    return wq_retry(err, "attempt 1 fails on purpose; retry me");
  }
  wasmq_job_context_progress(100);
  char out[32];
  snprintf(out, sizeof out, "{\"attempt\":%u}", (unsigned)job->attempt);
  return wq_ok(ret, out);
}

bool exports_handler_handle(handler_job_t *job, handler_list_u8_t *ret, handler_job_error_t *err) {
  bool ok = flaky(job, ret, err);
  handler_job_free(job);
  return ok;
}
