;; A component that imports wasi:http/outgoing-handler, which prefork-wasm does not provide:
;; refused at -t and at start, never run. Otherwise a valid wasi:cli/command (run returns ok).
(component
  (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func))))
  (core module $m (func (export "run") (result i32) i32.const 0))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli))
)
