export declare class WasmqError extends Error {}
export declare class InvalidJob extends WasmqError {
  readonly jobId: string | null;
  readonly reason: string;
}
export declare class PayloadTooLarge extends WasmqError {
  readonly jobId: string;
  readonly size: number;
  readonly limit: number;
}
export declare class QueueFull extends WasmqError {
  readonly queue: string;
  readonly backlog: number;
  readonly new: number;
  readonly limit: number;
}
export declare class WrongType extends WasmqError {
  readonly key: string;
  readonly found: string;
}
export declare class InvalidQueue extends WasmqError {}
export declare class JobNotFound extends WasmqError {
  readonly queue: string;
  readonly jobId: string;
}
export declare class JobFailed extends WasmqError {
  readonly jobId: string;
  readonly outcome: string;
  readonly error: string;
}
export declare class WaitTimeout extends WasmqError {
  readonly jobId: string;
  readonly state: string;
}
export declare function scriptError(err: unknown): unknown;
