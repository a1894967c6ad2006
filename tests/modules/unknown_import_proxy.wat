;; A wasi:http/proxy component that imports a function wasi:http/types does not have: refused
;; at -t and at start, never run.
(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))
    (export "fields" (type $fields (sub resource)))
    (export "[method]fields.frobnicate" (func (param "self" (borrow $fields))))
  ))
  (alias export $types "incoming-request" (type $request))
  (alias export $types "response-outparam" (type $outparam))
  (core module $m (func (export "handle") (param i32 i32)))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $request)) (param "response-out" (own $outparam))
    (canon lift (core func $i "handle")))
  (instance $handler
    (export "incoming-request" (type $request))
    (export "response-outparam" (type $outparam))
    (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $handler))
)
