;; A WASI reactor: its entry point traps unless _initialize ran first (the WASI application
;; ABI: a reactor's _initialize runs before any other export), then writes "ok" to stdout.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $ready (mut i32) (i32.const 0))
  (data (i32.const 16) "Content-Type: text/plain\0d\0a\0d\0aok\0a")
  (func (export "_initialize") (global.set $ready (i32.const 1)))
  (func (export "handle")
    (if (i32.eqz (global.get $ready)) (then unreachable))
    (i32.store (i32.const 0) (i32.const 16))  ;; iovec: base
    (i32.store (i32.const 4) (i32.const 31))  ;; iovec: length
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
)
