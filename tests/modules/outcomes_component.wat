;; A small component for the run side's unit tests: wasi:cli/run's run returns ok, and an
;; interface with a function per outcome (err, a trap, an endless loop). Imports nothing.
(component
  (core module $m
    (func (export "ok") (result i32) i32.const 0)
    (func (export "err") (result i32) i32.const 1)
    (func (export "trap") (result i32) unreachable)
    (func (export "spin") (result i32) (loop $again (br $again)) i32.const 0))
  (core instance $i (instantiate $m))
  (func $ok (result (result)) (canon lift (core func $i "ok")))
  (func $err (result (result)) (canon lift (core func $i "err")))
  (func $trap (result (result)) (canon lift (core func $i "trap")))
  (func $spin (result (result)) (canon lift (core func $i "spin")))
  (instance $cli (export "run" (func $ok)))
  (export "wasi:cli/run@0.2.0" (instance $cli))
  (instance $outcomes (export "err" (func $err)) (export "trap" (func $trap)) (export "spin" (func $spin)))
  (export "test:outcomes/all" (instance $outcomes))
)
