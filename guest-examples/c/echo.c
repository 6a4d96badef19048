// `echo`: returns the job payload as the result.
#include "wasmq.h"

bool exports_handler_handle(handler_job_t *job, handler_list_u8_t *ret, handler_job_error_t *err) {
  (void)err;
  wq_log(WASMQ_JOB_CONTEXT_LEVEL_INFO, "echo %zu bytes", job->payload.len);
  wasmq_job_context_progress(100);
  // The job is ours to free; its payload moves into the result, which the glue frees.
  *ret = job->payload;
  job->payload.len = 0;
  handler_job_free(job);
  return true;
}
