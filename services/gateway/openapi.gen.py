# Generates openapi.json, the management API's contract. Edit this, then run
#   python3 services/gateway/openapi.gen.py > services/gateway/openapi.json
# (tests/src/contract.rs checks that the two agree).
import json
def obj(props, required=None, extra=False):
    return {"type": "object", "properties": props, "required": required if required is not None else list(props.keys()), "additionalProperties": extra}
S = lambda: {"type": "string"}
N = lambda t: {"type": [t, "null"]}
U = lambda: {"type": "string", "format": "uuid"}
I = lambda: {"type": "integer"}
B = lambda: {"type": "boolean"}
ref = lambda n: {"$ref": f"#/components/schemas/{n}"}
arr = lambda x: {"type": "array", "items": x}
KIND = {"enum": ["endpoint-offline", "endpoint-online", "endpoint-unstable", "gateway-offline", "gateway-online", "retention-warning", "gateway-retired"]}
SCAN_STATE = {"enum": ["queued", "running", "finished", "failed", "cancelled"]}
SEVERITY = {"enum": ["high", "medium", "low", "info"]}
SCAN = {"id": U(), "version": I(), "endpoint": U(), "endpoint_name": N("string"), "gateway": U(), "targets": arr(S()),
    "max_pages": I(), "max_depth": I(), "rate": {**I(), "description": "Most requests a second"}, "again_of": {**N("string"), "format": "uuid"},
    "state": SCAN_STATE, "queue_position": {**N("integer"), "description": "Place in the endpoint's queue while queued (1: next)"},
    "queued_ms": I(), "queued_by": N("string"), "started_ms": N("integer"), "node": N("string"), "ended_ms": N("integer"),
    "pages": I(), "requests": I(), "findings": ref("FindingCounts"), "reason": {**N("string"), "description": "Why it failed or was cancelled"}}
schemas = {
  "Error": obj({"success": {"const": False}, "error": S()}),
  "Credential": obj({"id": U(), "label": S(), "kind": {"enum": ["scan", "support"]}, "issued_ms": I(), "revoked": B()}),
  "Gateway": obj({"id": U(), "version": I(), "name": S(), "description": S(), "status": {"enum": ["Initializing", "Online", "Offline", "Deleted"]},
      "created_ms": I(), "created_by": N("string"), "endpoint_url": S(), "socks_address": S(), "http_proxy_address": S(), "endpoint_count": I(),
      "scanner_credentials": arr(ref("Credential")), "last_activity_ms": I(), "deletion_due_ms": N("integer"), "deleted_ms": N("integer"), "deleted_reason": N("string")}),
  "DeletedGateway": obj({"id": U(), "name": S(), "deleted_ms": N("integer"), "deleted_reason": N("string")}),
  "IssuedCredential": obj({"id": U(), "gateway": U(), "kind": {"enum": ["scan", "support"]}, "secret": S(), "socks_address": S(), "usage": S()}),
  "SupportAccess": obj({"state": {"enum": ["off", "active", "expired"]}, "until_ms": N("integer"), "indefinite": B()}),
  "Endpoint": obj({"id": U(), "version": I(), "gateway": U(), "name": S(), "description": S(), "platform": {"enum": ["linux", "windows", "other"]},
      "status": {"enum": ["Pending", "Ready", "Offline"]}, "scan_access": B(), "support_access": ref("SupportAccess"), "open_streams": I(), "stream_limit": I(), "queued_streams": I(),
      "running_scans": I(), "scan_capacity": I(), "queued_scans": I(),
      "agent_version": N("string"), "agent_platform": N("string"), "hostname": N("string"), "machine": N("string"), "node": N("string"),
      "connected_since_ms": N("integer"), "last_disconnected_ms": N("integer"), "key_generation": I(), "last_refusal": N("string")}),
  "AddedEndpoint": obj({"endpoint": ref("Endpoint"), "key": S()}),
  "EndpointKey": obj({"endpoint": U(), "key_generation": I(), "key": S()}),
  "DeletedEndpoint": obj({"deleted": U(), "name": S()}),
  "Token": obj({"id": U(), "label": S(), "issued_ms": I(), "revoked": B()}),
  "User": obj({"name": S(), "role": {"enum": ["administrator", "security-lead", "reviewer"]}, "version": I(), "created_ms": I(), "created_by": N("string"), "tokens": arr(ref("Token")),
      "email": N("string"), "notified": B(), "notifications": N("boolean")}),
  "Webhook": obj({"id": U(), "url": S(), "events": arr(KIND), "created_ms": I(), "created_by": N("string")}),
  "AddedWebhook": obj({"webhook": ref("Webhook"), "secret": S()}),
  "RemovedWebhook": obj({"removed": U()}),
  "Notification": obj({"id": U(), "kind": KIND, "state": {"enum": ["sent", "suppressed", "resumed", "failed", "failing", "sending"]}, "subject": U(), "subject_name": N("string"),
      "first_ms": I(), "last_ms": I(), "node": N("string"), "channels": arr(S()), "sent": arr(obj({"channel": S(), "recipients": arr(S()), "subject": S(), "time_ms": I()})),
      "failures": I(), "last_error": N("string"), "suppressed": N("string"), "paused_until_ms": N("integer")}),
  "IssuedToken": obj({"id": U(), "user": S(), "token": S()}),
  "Me": obj({"name": S(), "role": {"enum": ["administrator", "security-lead", "reviewer"]}, "may_manage": B()}),
  "Status": obj({"node": S(), "event_log": S(), "log_head": I(), "directory_position": I(), "connected_endpoints": I(), "open_streams": I(), "stream_limit_per_endpoint": I(), "queued_streams": I(), "endpoint_url": S(), "socks_address": S(), "http_proxy_address": S(), "gateway_ca_pem": N("string")}),
  "AuditEntry": obj({"position": I(), "time_ms": I(), "time": S(), "aggregate": S(), "gateway": N("string"), "endpoint": N("string"), "actor": N("string"), "event": S(), "summary": S(), "trace_id": N("string")}),
  "AuditReport": obj({"log_head": I(), "truncated": B(), "entries": arr(ref("AuditEntry"))}),
  "VerifyReport": obj({"projections": arr(obj({"name": S(), "position": I(), "rows": I(), "matches": B()})), "all_match": B()}),
  "Node": obj({"node": S(), "state": {"enum": ["serving", "draining", "lost"]}, "relay_address": S(), "endpoints": I(), "streams": I(), "this_node": B()}),
  "NewGateway": obj({"name": S(), "description": S()}, ["name"]),
  "NewEndpoint": obj({"name": S(), "description": S(), "platform": {"enum": ["linux", "windows", "other"]}}, ["name", "platform"]),
  "EndpointEdit": obj({"name": S(), "description": S(), "version": I()}, ["version"]),
  "AccessChange": obj({"scan_access": B(), "support_access": {"oneOf": [{"enum": ["off", "indefinite"]}, {"type": "integer", "minimum": 1, "maximum": 30}]},
      "scan_capacity": {"oneOf": [{"const": "default"}, {"type": "integer", "minimum": 1, "maximum": 1000}], "description": "Scans of the built-in engine run at once; default: the gateway's --scan-capacity"}}, []),
  "NewCredential": obj({"label": S(), "kind": {"enum": ["scan", "support"]}}, []),
  "NewUser": obj({"name": S(), "role": {"enum": ["administrator", "security-lead", "reviewer"]}, "email": S()}, ["name", "role"]),
  "UserChange": obj({"role": {"enum": ["administrator", "security-lead", "reviewer"]}, "email": S(), "notifications": B()}, []),
  "NewWebhook": obj({"url": S(), "secret": S(), "events": arr(KIND)}, ["url"]),
  "NewToken": obj({"label": S()}, []),
  "FindingCounts": obj({"high": I(), "medium": I(), "low": I(), "info": I()}),
  "ScanFinding": obj({"rule": S(), "severity": SEVERITY, "url": S(), "evidence": S()}),
  "Scan": obj(SCAN),
  "ScanDetail": obj({**SCAN, "finding_list": arr(ref("ScanFinding"))}),
  "NewScan": {**obj({"endpoint": {**S(), "description": "Endpoint id, or its name when no other endpoint has it"},
      "targets": {**arr(S()), "description": "1 to 20 http(s) URLs the crawl starts from; it stays within their origins"},
      "max_pages": {**I(), "minimum": 1, "maximum": 10000, "default": 100}, "max_depth": {**I(), "minimum": 0, "maximum": 50, "default": 5},
      "rate": {**I(), "minimum": 1, "maximum": 100, "default": 10, "description": "Most requests a second"},
      "again": {**U(), "description": "Queue this earlier scan's endpoint and settings again"}}, []),
      "description": "Either `endpoint` and `targets` (with optional limits), or `again` alone."},
}
def resp(desc, schema):
    return {"description": desc, "content": {"application/json": {"schema": schema}}}
def errors(*codes):
    names = {"400": "Invalid input", "401": "Missing or invalid bearer token", "403": "The caller's role may not do this", "404": "No such resource",
             "409": "Conflict: duplicate name, remaining endpoints, a change based on an outdated version, scan access off, or a scan already ended", "410": "The gateway was deleted", "413": "The request body is larger than 64 KiB",
             "415": "The request body is not sent as application/json", "503": "Event log or directory unavailable"}
    return {c: resp(names[c], ref("Error")) for c in codes}
def op(summary, ok_code, ok_desc, ok_schema, errs, body=None, params=None):
    # Every operation that reads a JSON body can refuse it for its size or its content type.
    errs = errs + ["413", "415"] if body else errs
    o = {"summary": summary, "responses": {ok_code: resp(ok_desc, ok_schema), **errors(*errs)}}
    if body: o["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    if params: o["parameters"] = params
    return o
def p(name, desc="", schema=None):
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": schema or S()}
def q(name, desc, schema=None):
    return {"name": name, "in": "query", "required": False, "description": desc, "schema": schema or S()}
R = ["401", "503"]
AUDIT_FILTERS = [q("gateway", "Only this gateway, its endpoints and their tunnels", U()), q("endpoint", "Only this endpoint", U()), q("actor", "Only changes by this actor"),
              q("since", "From this time (date, UTC time or milliseconds)"), q("until", "Before this time")]
paths = {
  "/api/v1/status": {"get": op("This node's status", "200", "Status", ref("Status"), R)},
  "/api/v1/me": {"get": op("Who the token belongs to", "200", "The caller", ref("Me"), ["401"])},
  "/api/v1/audit": {"get": op("The event history as a readable timeline: the most recent entries, or a page after a position", "200", "Entries, oldest first", ref("AuditReport"), ["400"] + R,
      params=AUDIT_FILTERS + [q("after", "Entries after this log position, oldest first (the next page: after the last position returned)", {"type": "integer", "minimum": 0}),
              q("before", "Entries before this log position; without after, the most recent limit of them (the previous page: before the first position returned)", {"type": "integer", "minimum": 0}),
              q("limit", "Most entries (default 1000, at most 10000: read /api/v1/audit/stream for more)", {"type": "integer", "minimum": 1, "maximum": 10000})])},
  "/api/v1/audit/stream": {"get": {"summary": "The same entries as JSON lines (application/x-ndjson), sent as they are read, oldest first", "responses": {
      "200": {"description": "One AuditEntry per line", "content": {"application/x-ndjson": {"schema": ref("AuditEntry")}}}, **errors("400", *R)},
      "parameters": AUDIT_FILTERS + [q("after", "Entries after this log position", {"type": "integer", "minimum": 0}), q("before", "Entries before this log position", {"type": "integer", "minimum": 0}), q("limit", "Most entries (default: all)", {"type": "integer", "minimum": 1})]}},
  "/api/v1/projections/verify": {"post": op("Rebuild the projections from the log and compare", "200", "Comparison", ref("VerifyReport"), ["401", "403", "503"])},
  "/api/v1/gateways": {
      "get": op("Gateways (not deleted)", "200", "Gateways", arr(ref("Gateway")), R),
      "post": op("Create a gateway", "201", "Created, and online", ref("Gateway"), ["400", "403", "409"] + R, body="NewGateway")},
  "/api/v1/deleted-gateways": {"get": op("Deleted gateways, whose names stay visible", "200", "Deleted gateways", arr(ref("DeletedGateway")), R)},
  "/api/v1/gateways/{id}": {
      "get": op("One gateway", "200", "The gateway", ref("Gateway"), ["404"] + R, params=[p("id", "Gateway id")]),
      "delete": op("Delete a gateway with no endpoints", "200", "The deleted gateway", ref("Gateway"), ["403", "404", "409", "410"] + R, params=[p("id", "Gateway id")])},
  "/api/v1/gateways/{id}/scanner-credentials": {"post": op("Issue a scanner credential (shown once)", "201", "The credential", ref("IssuedCredential"), ["400", "403", "404", "410"] + R, body="NewCredential", params=[p("id", "Gateway id")])},
  "/api/v1/gateways/{id}/scanner-credentials/{credential}": {"delete": op("Revoke a scanner credential", "200", "The gateway", ref("Gateway"), ["403", "404", "410"] + R, params=[p("id", "Gateway id"), p("credential", "Credential id")])},
  "/api/v1/gateways/{id}/endpoints": {
      "get": op("A gateway's endpoints", "200", "Endpoints", arr(ref("Endpoint")), ["404"] + R, params=[p("id", "Gateway id")]),
      "post": op("Add an endpoint; returns its key", "201", "The endpoint and its key", ref("AddedEndpoint"), ["400", "403", "404", "409", "410"] + R, body="NewEndpoint", params=[p("id", "Gateway id")])},
  "/api/v1/endpoints/{id}": {
      "get": op("One endpoint", "200", "The endpoint", ref("Endpoint"), ["404"] + R, params=[p("id", "Endpoint id")]),
      "patch": op("Edit name and/or description", "200", "The endpoint", ref("Endpoint"), ["400", "403", "404", "409"] + R, body="EndpointEdit", params=[p("id", "Endpoint id")]),
      "delete": op("Delete an endpoint", "200", "What was deleted", ref("DeletedEndpoint"), ["403", "404", "409", "410"] + R, params=[p("id", "Endpoint id")])},
  "/api/v1/endpoints/{id}/key": {"get": op("The endpoint key (Copy Endpoint Key)", "200", "The key", ref("EndpointKey"), ["403", "404"] + R, params=[p("id", "Endpoint id")])},
  "/api/v1/endpoints/{id}/key/rotate": {"post": op("Replace the key; the old one stops working", "200", "The new key", ref("EndpointKey"), ["403", "404", "409"] + R, params=[p("id", "Endpoint id")])},
  "/api/v1/endpoints/{id}/unbind": {"post": op("Release the key's binding to its machine: the next machine that presents the key binds it; the bound machine's session ends", "200", "The endpoint, bound to no machine", ref("Endpoint"), ["403", "404"] + R, params=[p("id", "Endpoint id")])},
  "/api/v1/endpoints/{id}/access": {"put": op("Manage access: scan access, support-engineer access", "200", "The endpoint", ref("Endpoint"), ["400", "403", "404"] + R, body="AccessChange", params=[p("id", "Endpoint id")])},
  "/api/v1/scans": {
      "get": op("Scans, in the order queued, each waiting one with its place in its endpoint's queue", "200", "Scans", arr(ref("Scan")), ["400", "404"] + R,
          params=[q("endpoint", "Only this endpoint's (id or name)"), q("state", "Only scans in this state", SCAN_STATE),
                  q("limit", "Only the most recently queued this many (still in the order queued)", {"type": "integer", "minimum": 1})]),
      "post": op("Queue a scan of the built-in engine through an endpoint; it starts when the endpoint has a free slot", "201", "The queued scan", ref("ScanDetail"), ["400", "403", "404", "409"] + R, body="NewScan")},
  "/api/v1/scans/{id}": {"get": op("A scan with its findings", "200", "The scan", ref("ScanDetail"), ["404"] + R, params=[p("id", "Scan id")])},
  "/api/v1/scans/{id}/cancel": {"post": op("Cancel a queued or running scan (a running one stops the requests in flight)", "200", "The cancelled scan", ref("ScanDetail"), ["403", "404", "409"] + R, params=[p("id", "Scan id")])},
  "/api/v1/scans/{id}/report": {"get": op("The scan's report: JSON (ism-scan-report/1) or SARIF 2.1.0", "200", "The report", {"type": "object"}, ["400", "404"] + R,
      params=[p("id", "Scan id"), q("format", "json (default) or sarif", {"enum": ["json", "sarif"]})])},
  "/api/v1/nodes": {"get": op("The cluster's nodes: state (serving, draining, lost), endpoints and streams held", "200", "Nodes, by name", arr(ref("Node")), R)},
  "/api/v1/nodes/{node}/drain": {"post": op("Drain a node: it takes no new endpoints and hands its endpoints to the other nodes, make before break", "202", "The node, draining", ref("Node"), ["403", "404"] + R, params=[p("node", "Node name")])},
  "/api/v1/users": {
      "get": op("Users", "200", "Users", arr(ref("User")), ["403"] + R),
      "post": op("Create a user", "201", "The user", ref("User"), ["400", "403", "409"] + R, body="NewUser")},
  "/api/v1/users/{name}": {"patch": op("Change a user's role (Administrators), email address or notification choice (also the user themselves)", "200", "The user", ref("User"), ["400", "403", "404"] + R, body="UserChange", params=[p("name", "User name")])},
  "/api/v1/webhooks": {
      "get": op("Webhook subscriptions", "200", "Webhooks", arr(ref("Webhook")), ["403"] + R),
      "post": op("Subscribe a URL to notifications (signed JSON POSTs; the secret is shown once)", "201", "The webhook and its secret", ref("AddedWebhook"), ["400", "403"] + R, body="NewWebhook")},
  "/api/v1/webhooks/{id}": {"delete": op("Remove a webhook", "200", "Removed", ref("RemovedWebhook"), ["403", "404"] + R, params=[p("id", "Webhook id")])},
  "/api/v1/notifications": {"get": op("Notifications sent, suppressed or being sent, newest first", "200", "Notifications", arr(ref("Notification")), ["400"] + R,
      params=[q("limit", "At most this many (default 100, at most 1000)", {"type": "integer", "minimum": 0})])},
  "/api/v1/users/{name}/tokens": {"post": op("Issue an API token (shown once)", "201", "The token", ref("IssuedToken"), ["400", "403", "404"] + R, body="NewToken", params=[p("name", "User name")])},
  "/api/v1/users/{name}/tokens/{token}": {"delete": op("Revoke an API token", "200", "The user", ref("User"), ["403", "404"] + R, params=[p("name", "User name"), p("token", "Token id")])},
}
doc = {"openapi": "3.1.0",
  "info": {"title": "Internal-scanning gateway management API", "version": "1", "description": "Gateways, endpoints, keys, access, scanner credentials, users, audit and scans. Every request needs `Authorization: Bearer <token>`. Errors are `{\"success\": false, \"error\": \"...\"}`."},
  "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
  "security": [{"bearer": []}],
  "paths": paths}
print(json.dumps(doc, indent=2))
