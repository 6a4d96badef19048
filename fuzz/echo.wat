;; The core module of fuzz/seeds/handler_upload/echo: a handler that reports progress, logs
;; and returns its payload. Made a component against wit/job.wit with wit-component
;; (`embed_component_metadata`, then `ComponentEncoder`), as docs/fuzzing.md describes.
(module
  (import "wasmq:job/context@0.1.1" "progress" (func $progress (param i32)))
  (import "wasmq:job/context@0.1.1" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "echo")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "cabi_realloc")
    (param $old i32) (param $old_size i32) (param $align i32) (param $size i32)
    (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1)))
              (i32.const -1))
          (then unreachable))))
    (local.get $ptr))
  ;; `handle` gets the job record flattened (id, queue, handler, payload as pointer and
  ;; length, attempt, max-attempts) and returns a pointer to the result: discriminant 0 (ok)
  ;; at 16, the list's pointer and length at 20 and 24.
  (func (export "handle")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (call $log (i32.const 2) (i32.const 512) (i32.const 4))
    (call $progress (i32.const 100))
    (i32.store8 (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (local.get 6))
    (i32.store (i32.const 24) (local.get 7))
    (i32.const 16)))
