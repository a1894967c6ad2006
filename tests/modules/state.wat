;; Reports, then changes, the three kinds of state an instance has: a byte of linear memory,
;; a mutable global and a table entry. A fresh instance per run prints "m=0 g=0 t=1" every time;
;; one that saw a previous run's state would print a 1 for m or g, or a 0 for t.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 0))
  (table $t 2 funcref)
  (func $f)
  (elem declare func $f)
  ;; 38 bytes at 16: a CGI head (26 bytes), then "m=? g=? t=?\n" with the ?s at 44, 48 and 52.
  (data (i32.const 16) "Content-Type: text/plain\n\nm=? g=? t=?\n")
  (func (export "_start")
    (i32.store8 (i32.const 44) (i32.add (i32.const 48) (i32.load8_u (i32.const 1000))))
    (i32.store8 (i32.const 1000) (i32.const 1))
    (i32.store8 (i32.const 48) (i32.add (i32.const 48) (global.get $g)))
    (global.set $g (i32.const 1))
    (i32.store8 (i32.const 52) (i32.add (i32.const 48) (ref.is_null (table.get $t (i32.const 1)))))
    (table.set $t (i32.const 1) (ref.func $f))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 38))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
