// `echo`: returns the job payload as the result.
import { log, progress } from "wasmq:job/context@0.1.3";

export function handle(job) {
  log("info", `echo ${job.payload.length} bytes`);
  progress(100);
  return job.payload;
}
