"""kubegate's access policy: how an HTTP request to a Kube API becomes a decision.

Contract: pure and synchronous. No I/O, no asyncio, no clock: every function that depends on
time takes `now` (a timezone-aware datetime). The edge calls `decide` on every request from a
`PolicyState` folded from the event log; the relay asks `bindings` for the RBAC objects that let
the cluster enforce the same grants a second time; the console asks `explain`.

Modules, one job each:
  attributes  HTTP method + path + query -> Kubernetes request attributes (RequestInfoFactory)
  selectors   the field and label selector grammars `attributes` needs
  rules       RBAC rule matching with Kubernetes semantics, compiled for speed
  roles       built-in roles (view, edit, admin, cluster-admin) as rule sets
  settings    fleet settings that change policy, with their defaults
  state       PolicyState: the in-memory fold of catalog events
  decide      the decision for one request
  breakglass  who may approve emergency access, and the grant an approval creates
  bindings    the JIT RoleBinding/ClusterRoleBinding plan mirroring a user's grants
  explain     what a user can do where, and why
"""
