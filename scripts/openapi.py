"""Generates src/api/openapi.json, the OpenAPI document strongroom serves.

Run from the repository root after changing the API: python3 scripts/openapi.py
"""
import json
import os

def ref(kind, name):
    return {"$ref": f"#/components/{kind}/{name}"}

def json_content(schema, example=None, examples=None):
    c = {"schema": schema}
    if example is not None:
        c["example"] = example
    if examples is not None:
        c["examples"] = examples
    return {"application/json": c}

def error_response(description, error, detail=None, extra_headers=None, examples=None):
    ex = {"error": error}
    if detail:
        ex["detail"] = detail
    headers = {"Cache-Control": ref("headers", "CacheControl")}
    if extra_headers:
        headers.update(extra_headers)
    r = {"description": description, "headers": headers}
    if examples:
        r["content"] = json_content(ref("schemas", "Error"), examples=examples)
    else:
        r["content"] = json_content(ref("schemas", "Error"), example=ex)
    return r

KEY_PATTERN = r"^(?!.*(\.\.|//))[A-Za-z0-9_=-](?:[A-Za-z0-9_=./-]{0,254}[A-Za-z0-9_=-])?$"
PREFIX_PATTERN = r"^[A-Za-z0-9_=./-]*$"
IF_MATCH_PATTERN = r'^(W/)?("0*[1-9][0-9]{0,18}"|0*[1-9][0-9]{0,18})$'
I64_MAX = 9223372036854775807
U64_MAX = 18446744073709551615

# A prefix must be able to begin a key: key characters, not starting with
# `.` or `/`, and never two of those in a row (the server's rule).
SCOPE_PATTERN = r"^(secrets:(read|list|write|delete)(:[A-Za-z0-9_=-]+([./][A-Za-z0-9_=-]+)*[./]?)?|apikeys:admin|audit:read|keys:admin)$"

# The `data` of a /watch event: a WatchEvent as compact JSON on one line,
# exactly its four members, in any order, each named once. OpenAPI 3.0 has
# no `contentSchema`, so this pattern is what checks the JSON (schemathesis
# reads the schema of a text/event-stream response as that of one event).
WATCH_ACTIONS = ["put", "delete", "undelete", "destroy", "expire"]
_WATCH_MEMBERS = {
    "action": '"(' + "|".join(WATCH_ACTIONS) + ')"',
    "at": r'"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z"',
    "key": r'"(?![^"]*(\.\.|//))[A-Za-z0-9_=-](?:[A-Za-z0-9_=./-]{0,254}[A-Za-z0-9_=-])?"',
    "version": "[1-9][0-9]{0,18}",
}
WATCH_DATA_PATTERN = (
    r"^\{"
    + "".join(f'(?=.*"{name}":{value}[,}}])' for name, value in _WATCH_MEMBERS.items())
    + r'"[a-z]+":[^,]+(,"[a-z]+":[^,]+){3}\}$'
)

schemas = {
    "ApiKeyCreate": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"\S"},
            "scopes": {"type": "array", "minItems": 1,
                       "items": {"type": "string", "pattern": SCOPE_PATTERN, "maxLength": 269}},
            "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 36500},
        },
    },
    "ApiKeyCreated": {
        "type": "object",
        "required": ["id", "key", "name", "scopes", "created_at", "expires_at"],
        "properties": {
            "id": {"type": "string"},
            "key": {"type": "string", "description": "The key text, shown only in this response."},
            "name": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time", "nullable": True},
        },
    },
    "ApiKeyInfo": {
        "type": "object",
        "required": ["id", "name", "scopes", "created_at", "expires_at", "last_used_at"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time", "nullable": True},
            "last_used_at": {"type": "string", "format": "date-time", "nullable": True},
        },
    },
    "ApiKeyList": {
        "type": "object",
        "required": ["apikeys"],
        "properties": {"apikeys": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKeyInfo"}}},
    },
    "Key": {
        "type": "string",
        "description": (
            "A secret key: 1 to 256 bytes of `A-Z a-z 0-9 - _ = . /`. It may not start or "
            "end with `.` or `/`, and may not contain an empty segment (`..` or `//`). Keys "
            "may contain `/`; in a request path the key may be sent raw or percent-encoded "
            "(`team/app/db.password` or `team%2Fapp%2Fdb.password`)."
        ),
        "minLength": 1,
        "maxLength": 256,
        "pattern": KEY_PATTERN,
        "example": "team/app/db.password",
    },
    "SecretCreate": {
        "type": "object",
        "required": ["key", "value"],
        "properties": {
            "key": {
                "allOf": [ref("schemas", "Key")],
                "description": "The unique identifier for the secret",
            },
            "value": {
                "type": "string",
                "maxLength": 65536,
                "description": (
                    "The secret value to store. Values are limited to 65536 bytes of UTF-8 "
                    "by default (413 `value too large` above the limit)."
                ),
            },
            "expires_at": {
                "type": "string", "format": "date-time", "nullable": True,
                "description": (
                    "When this version lapses (RFC 3339, in the future, at most ten years ahead). "
                    "From then on the key reads as deleted. Never with `ttl_seconds`."
                ),
            },
            "ttl_seconds": {
                "type": "integer", "minimum": 1, "maximum": 315576000, "nullable": True,
                "description": "Seconds from now until this version lapses. Never with `expires_at`.",
            },
        },
        "additionalProperties": True,
        "description": (
            "A secret to create or update. Unknown fields are ignored. At most one of "
            "`expires_at` and `ttl_seconds` (400 `give expires_at or ttl_seconds, not both`)."
        ),
        "not": {
            "description": "Not both `expires_at` and `ttl_seconds` (a null one counts as not given).",
            "required": ["expires_at", "ttl_seconds"],
            "properties": {"expires_at": {"type": "string"}, "ttl_seconds": {"type": "integer"}},
        },
    },
    "Secret": {
        "type": "object",
        "required": ["key", "value"],
        "properties": {
            "key": {"allOf": [ref("schemas", "Key")], "description": "The key of the secret"},
            "value": {"type": "string", "description": "The secret value"},
        },
    },
    "Message": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string", "example": "success"}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "string",
                "description": "The error text, one fixed string per kind of failure.",
                "example": "invalid request format",
            },
            "detail": {
                "type": "string",
                "description": "Optional specifics about the failure. Never echoes a secret value.",
            },
        },
        "additionalProperties": True,
    },
    "SecretSummary": {
        "type": "object",
        "required": ["key", "version", "created_at", "updated_at"],
        "properties": {
            "key": ref("schemas", "Key"),
            "version": {"type": "integer", "format": "int64", "minimum": 1,
                        "description": "The current version of the secret."},
            "created_at": {"type": "string", "format": "date-time",
                           "description": "When the secret was first created."},
            "updated_at": {"type": "string", "format": "date-time",
                           "description": "When the current version was written."},
            "expires_at": {"type": "string", "format": "date-time", "nullable": True,
                           "description": "When the current version lapses, or null."},
        },
    },
    "SecretList": {
        "type": "object",
        "required": ["secrets", "next_cursor"],
        "properties": {
            "secrets": {"type": "array", "items": ref("schemas", "SecretSummary"),
                        "description": "The secrets on this page, in key order."},
            "next_cursor": {"type": "string", "nullable": True,
                            "description": "Pass as `cursor` to fetch the next page; null on the last page."},
        },
    },
    "VersionInfo": {
        "type": "object",
        "required": ["version", "created_at", "deleted"],
        "properties": {
            "version": {"type": "integer", "format": "int64", "minimum": 1},
            "created_at": {"type": "string", "format": "date-time"},
            "deleted": {"type": "boolean"},
            "dek_id": {"type": "integer", "format": "int32", "minimum": 1, "nullable": True,
                       "description": "The data key this version is sealed under."},
        },
    },
    "BatchGet": {
        "type": "object",
        "required": ["keys"],
        "additionalProperties": False,
        "properties": {
            "keys": {"type": "array", "minItems": 1, "maxItems": 100,
                     "items": {"type": "string", "pattern": KEY_PATTERN, "maxLength": 256}},
        },
    },
    "BatchSecrets": {
        "type": "object",
        "required": ["secrets", "missing"],
        "properties": {
            "secrets": {"type": "array", "items": {
                "type": "object",
                "required": ["key", "value", "version"],
                "properties": {
                    "key": {"type": "string"},
                    "value": {"type": "string"},
                    "version": {"type": "integer", "minimum": 1},
                },
            }},
            "missing": {"type": "array", "items": {"type": "string"},
                        "description": "Keys that are absent, expired, soft-deleted or outside the caller's read scope, alike."},
        },
    },
    "DataKey": {
        "type": "object",
        "required": ["dek_id", "created_at"],
        "properties": {
            "dek_id": {"type": "integer", "format": "int32", "minimum": 1},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "SecretMetadata": {
        "type": "object",
        "required": ["key", "current_version", "created_at", "updated_at", "deleted", "versions"],
        "properties": {
            "key": ref("schemas", "Key"),
            "current_version": {"type": "integer", "format": "int64"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "deleted": {"type": "boolean", "description": "Whether the current version is deleted (or lapsed)."},
            "expires_at": {"type": "string", "format": "date-time", "nullable": True,
                           "description": "When the current version lapses (or lapsed), or null."},
            "versions": {"type": "array", "items": ref("schemas", "VersionInfo")},
        },
    },
    "AuditPage": {
        "type": "object",
        "required": ["lines", "next"],
        "properties": {
            "lines": {"type": "array", "items": {"type": "object", "description": (
                "One audit line as in audit.log: time, request_id, tenant, subject, action, key, "
                "status, client, and its chain fields (v, seq, prev, mac).")}},
            "next": {"type": "integer", "nullable": True, "minimum": 1,
                     "description": "Pass as `after` for the next page; null when this page is the last."},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ready"]}},
    },
    "WatchEvent": {
        "type": "object",
        "required": ["key", "version", "action", "at"],
        "properties": {
            "key": {"allOf": [ref("schemas", "Key")], "description": "The key that changed"},
            "version": {"type": "integer", "format": "int64", "minimum": 1,
                        "description": "The version the change wrote (`put`) or acted on"},
            "action": {"type": "string", "enum": WATCH_ACTIONS},
            "at": {"type": "string", "format": "date-time",
                   "description": "When the change was made: UTC, to the millisecond"},
        },
        "additionalProperties": False,
        "description": (
            "One change, sent as the `data` of a `GET /watch` event (compact JSON on one line). "
            "Never a value."
        ),
    },
}

headers = {
    "ETag": {
        "description": 'The version of the secret as a quoted number, e.g. `"3"`; usable in `If-Match`.',
        "required": True,
        "schema": {"type": "string", "pattern": r'^"[0-9]+"$', "example": '"3"'},
    },
    "Revision": {
        "description": (
            "On the nats store: the write's revision. A read that sends it back in "
            "`X-Strongroom-Min-Revision`, through any gateway, sees this write or a later one."
        ),
        "schema": {"type": "string", "pattern": "^[0-9]+$", "example": "4711"},
    },
    "LastModified": {
        "description": "When the returned version was written (HTTP date).",
        "schema": {"type": "string", "example": "Tue, 15 Nov 1994 08:12:31 GMT"},
    },
    "CacheControl": {
        "description": "Responses carrying secrets or errors are never cached.",
        "schema": {"type": "string", "example": "no-store"},
    },
    "RetryAfter": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "string", "example": "1"},
    },
    "WWWAuthenticate": {
        "description": "The authentication challenge.",
        "required": True,
        "schema": {"type": "string", "example": "Bearer"},
    },
}

parameters = {
    "KeyPath": {
        "name": "key",
        "in": "path",
        "required": True,
        "description": "The key of the secret (may contain `/`, sent raw or percent-encoded)",
        "schema": ref("schemas", "Key"),
        "example": "team/app/db.password",
    },
    "IfMatch": {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": (
            'Only proceed if the current version of the secret is this one (a version number '
            'as returned in `ETag`, e.g. `"3"`); otherwise 412 `version mismatch`. '
            'May not be combined with `If-None-Match`.'
        ),
        "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
        "example": '"3"',
    },
    "MinRevision": {
        "name": "X-Strongroom-Min-Revision",
        "in": "header",
        "required": False,
        "description": (
            "Answer with every change up to this revision (the `X-Strongroom-Revision` of a "
            "write): a nats gateway that has not seen it yet reads from the stream leader "
            "instead of its cache. The embedded store is always current."
        ),
        "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
        "example": "4711",
    },
    "IfNoneMatch": {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": (
            "Only `*` is supported: create the secret only if it does not exist yet; "
            "otherwise 412 `version mismatch`. May not be combined with `If-Match`."
        ),
        "schema": {"type": "string", "enum": ["*"]},
        "example": "*",
    },
}

responses = {
    "BadRequest": error_response("Bad request", "invalid request format", "field 'key' is required"),
    "BadRequestGet": error_response("Bad request", "error retrieving secret", "version must be a positive integer"),
    "BadRequestDelete": error_response("Bad request", "error deleting secret", "If-Match must be a version, as in If-Match: \"3\""),
    "Unauthorized": error_response(
        "Missing or invalid credentials", "unauthorized",
        extra_headers={"WWW-Authenticate": ref("headers", "WWWAuthenticate")}),
    "Forbidden": error_response("The credentials do not allow this operation on this key", "forbidden"),
    "NotFound": error_response("Secret not found", "resource not found"),
    "PreconditionFailed": error_response("The secret's current version does not match the precondition", "version mismatch"),
    "PayloadTooLarge": error_response(
        "The request body or the secret value is too large", "request too large",
        examples={
            "requestTooLarge": {"summary": "Request body over the limit",
                                "value": {"error": "request too large"}},
            "valueTooLarge": {"summary": "Secret value over the limit",
                              "value": {"error": "value too large", "detail": "values are limited to 65536 bytes"}},
        }),
    "UnsupportedMediaType": error_response(
        "The request body is not JSON", "unsupported media type", "send the body as application/json"),
    "Unavailable": error_response(
        "The store or audit trail cannot take the request now (a full disk, NATS down); or more requests "
        "are in flight than --max-in-flight, or the write queue is full, and then Retry-After says when to retry",
        "service unavailable", extra_headers={"Retry-After": ref("headers", "RetryAfter")}),
    "RateLimited": error_response(
        "The credential is over --rate-limit, or the client address failed authentication too often; "
        "retry after the given seconds",
        "rate limited", extra_headers={"Retry-After": ref("headers", "RetryAfter")}),
    "RequestTimeout": error_response(
        "The request body did not arrive within --body-timeout", "request timeout",
        "the request body did not arrive in time"),
    "UriTooLong": error_response("The request line is over 64 KiB", "uri too long"),
    "HeadersTooLarge": error_response(
        "More than 100 headers, or a request head over about 400 KiB", "request header fields too large"),
    "IntegrityFailed": error_response(
        "Stored data (the value, its data key or its record) failed its integrity check: damaged or "
        "tampered storage. Never carries a value.", "stored data failed its integrity check"),
}

def secured(op_responses):
    r = dict(op_responses)
    r.setdefault("401", ref("responses", "Unauthorized"))
    r.setdefault("403", ref("responses", "Forbidden"))
    r.setdefault("414", ref("responses", "UriTooLong"))
    r.setdefault("429", ref("responses", "RateLimited"))
    r.setdefault("431", ref("responses", "HeadersTooLarge"))
    r.setdefault("503", ref("responses", "Unavailable"))
    return dict(sorted(r.items()))

success_example = {"message": "success"}

def message_200(description, etag=False):
    r = {"description": description,
         "content": json_content(ref("schemas", "Message"), example=success_example)}
    if etag:
        r["headers"] = {"ETag": ref("headers", "ETag"),
                        "X-Strongroom-Revision": ref("headers", "Revision")}
    return r

paths = {
    "/secrets": {
        "put": {
            "tags": ["Secrets"],
            "summary": "Create or update a secret",
            "description": (
                "Writes a new version of the secret. `If-Match` makes the write conditional on "
                "the current version; `If-None-Match: *` makes it create-only."
            ),
            "operationId": "putSecret",
            "parameters": [ref("parameters", "IfMatch"), ref("parameters", "IfNoneMatch")],
            "requestBody": {
                "required": True,
                "content": json_content(
                    ref("schemas", "SecretCreate"),
                    example={"key": "api-key", "value": "sk_live_abcdefghijklmnopqrstuvwxyz"}),
            },
            "responses": secured({
                "200": message_200("Secret created or updated", etag=True),
                "400": ref("responses", "BadRequest"),
                "412": ref("responses", "PreconditionFailed"),
                "408": ref("responses", "RequestTimeout"),
                "413": ref("responses", "PayloadTooLarge"),
                "415": ref("responses", "UnsupportedMediaType"),
            }),
        },
        "get": {
            "tags": ["Secrets"],
            "summary": "List secrets",
            "description": "Lists the keys of live secrets in key order, a page at a time. Values are never listed.",
            "operationId": "listSecrets",
            "parameters": [
                {"name": "prefix", "in": "query", "required": False,
                 "description": "Only list keys starting with this prefix.",
                 "schema": {"type": "string", "maxLength": 256, "pattern": PREFIX_PATTERN},
                 "example": "team/app/"},
                {"name": "limit", "in": "query", "required": False,
                 "description": "The largest number of secrets to return.",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                {"name": "cursor", "in": "query", "required": False,
                 "description": "The `next_cursor` of the previous page.",
                 "schema": {"type": "string"}},
                {"name": "expiring_before", "in": "query", "required": False,
                 "description": "Only keys whose current version lapses before this time (RFC 3339).",
                 "schema": {"type": "string", "format": "date-time"}},
            ],
            "responses": secured({
                "200": {"description": "A page of secrets",
                        "content": json_content(ref("schemas", "SecretList"), example={
                            "secrets": [{"key": "team/app/db.password", "version": 3,
                                         "created_at": "2024-05-01T12:00:00Z",
                                         "updated_at": "2024-06-01T09:30:00Z"}],
                            "next_cursor": None})},
                "400": ref("responses", "BadRequest"),
            }),
        },
    },
    "/secrets/{key}": {
        "parameters": [ref("parameters", "KeyPath")],
        "get": {
            "tags": ["Secrets"],
            "summary": "Get a secret",
            "description": "Returns the current version of the secret, or the version given by `version`.",
            "operationId": "getSecret",
            "parameters": [
                {"name": "version", "in": "query", "required": False,
                 "description": "Read this version instead of the current one.",
                 "schema": {"type": "integer", "format": "int64", "minimum": 1, "maximum": I64_MAX}},
                ref("parameters", "MinRevision"),
            ],
            "responses": secured({
                "200": {"description": "Secret retrieved",
                        "headers": {"ETag": ref("headers", "ETag"),
                                    "Last-Modified": ref("headers", "LastModified"),
                                    "Cache-Control": ref("headers", "CacheControl")},
                        "content": json_content(ref("schemas", "Secret"), example={
                            "key": "api-key", "value": "sk_live_abcdefghijklmnopqrstuvwxyz"})},
                "400": ref("responses", "BadRequestGet"),
                "404": ref("responses", "NotFound"),
                "502": ref("responses", "IntegrityFailed"),
            }),
        },
        "delete": {
            "tags": ["Secrets"],
            "summary": "Delete a secret",
            "description": "Soft-deletes the current version; it can be restored with `POST /undelete/{key}`.",
            "operationId": "deleteSecret",
            "parameters": [ref("parameters", "IfMatch")],
            "responses": secured({
                "200": message_200("Secret deleted"),
                "400": ref("responses", "BadRequestDelete"),
                "404": ref("responses", "NotFound"),
                "412": ref("responses", "PreconditionFailed"),
            }),
        },
    },
    "/metadata/{key}": {
        "parameters": [ref("parameters", "KeyPath")],
        "get": {
            "tags": ["Secrets"],
            "summary": "Get a secret's metadata",
            "description": "Returns the secret's versions and timestamps. Never returns values.",
            "operationId": "getSecretMetadata",
            "responses": secured({
                "200": {"description": "Secret metadata",
                        "content": json_content(ref("schemas", "SecretMetadata"), example={
                            "key": "team/app/db.password", "current_version": 2,
                            "created_at": "2024-05-01T12:00:00Z", "updated_at": "2024-06-01T09:30:00Z",
                            "deleted": False,
                            "versions": [
                                {"version": 1, "created_at": "2024-05-01T12:00:00Z", "deleted": False},
                                {"version": 2, "created_at": "2024-06-01T09:30:00Z", "deleted": False}]})},
                "400": ref("responses", "BadRequest"),
                "404": ref("responses", "NotFound"),
            }),
        },
        "delete": {
            "tags": ["Secrets"],
            "summary": "Destroy a secret",
            "description": "Permanently destroys every version of the secret and its metadata. This cannot be undone.",
            "operationId": "destroySecret",
            "responses": secured({
                "200": message_200("Secret destroyed"),
                "400": ref("responses", "BadRequest"),
                "404": ref("responses", "NotFound"),
            }),
        },
    },
    "/undelete/{key}": {
        "parameters": [ref("parameters", "KeyPath")],
        "post": {
            "tags": ["Secrets"],
            "summary": "Undelete a secret",
            "description": "Restores a soft-deleted secret. Takes no request body.",
            "operationId": "undeleteSecret",
            "responses": secured({
                "200": message_200("Secret restored"),
                "400": ref("responses", "BadRequest"),
                "404": ref("responses", "NotFound"),
            }),
        },
    },
    "/watch": {
        "get": {
            "tags": ["Secrets"],
            "summary": "Follow changes under a prefix (Server-Sent Events)",
            "description": (
                "Needs `secrets:list` on the prefix. Streams one event per change of a key under the "
                "prefix, in commit order: `put`, `delete`, `undelete`, `destroy`, `expire`. Each event "
                "is an `id:` line (the event id) and one `data:` line, a `WatchEvent` as compact JSON "
                "(`{\"action\",\"at\",\"key\",\"version\"}`); never a value, and no `event:` or "
                "`retry:` field. Without `after` or `Last-Event-ID` the stream starts at the next "
                "change; with one it first sends the kept events after that id, then the live ones, "
                "with nothing repeated; 410 when some of those are no longer kept, or for an id this "
                "server never gave (list again, then watch from now). An idle stream carries "
                "`: heartbeat` comments (every 15 s, `--watch-heartbeat`). The stream does not end by "
                "itself: only when the server stops, when the credential is revoked or expires (checked "
                "every 5 s), or when the watcher falls too far behind the live feed (resume by id)."
            ),
            "operationId": "watchSecrets",
            "parameters": [
                {"name": "prefix", "in": "query", "required": False,
                 "description": "Only changes of keys starting with this prefix.",
                 "schema": {"type": "string", "maxLength": 256, "pattern": PREFIX_PATTERN}},
                {"name": "after", "in": "query", "required": False,
                 "description": "Resume after this event id (as `Last-Event-ID`).",
                 "schema": {"type": "integer", "minimum": 0, "maximum": U64_MAX}},
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "description": (
                     "Resume after this event id: the `id` of the last event received, as an "
                     "`EventSource` sends it back when it reconnects."
                 ),
                 "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}},
            ],
            "responses": secured({
                "200": {
                    "description": (
                        "The stream of changes. Its schema is that of one event, as `id`, `event` "
                        "and `data` fields."
                    ),
                    "content": {"text/event-stream": {
                        "schema": {
                            "type": "object",
                            "required": ["id", "event", "data"],
                            "properties": {
                                "id": {"type": "string", "pattern": "^[1-9][0-9]{0,19}$",
                                       "description": "The event id: `Last-Event-ID` (or `after`) resumes after it."},
                                "event": {"type": "string", "enum": ["message"],
                                          "description": "No `event:` field is sent, so every event is a `message`."},
                                "data": {"type": "string", "pattern": WATCH_DATA_PATTERN,
                                         "description": (
                                             "A `WatchEvent` (`#/components/schemas/WatchEvent`) as "
                                             "compact JSON: its four members, in any order."
                                         )},
                            },
                            "additionalProperties": False,
                        },
                        "example": (
                            "id: 42\ndata: {\"action\":\"put\",\"at\":\"2026-12-03T10:00:00.000Z\","
                            "\"key\":\"team/db\",\"version\":3}\n\n: heartbeat\n\n"
                        ),
                    }},
                },
                "400": error_response("Bad request", "invalid request format", "Last-Event-ID and after must be an event id (a whole number)"),
                "410": error_response("Resumed from before the kept events, or from an id this server never gave",
                                      "resource gone",
                                      "events after that id are no longer kept: list again, then watch from now"),
            }),
        },
    },
    "/batch/get": {
        "post": {
            "tags": ["Secrets"],
            "summary": "Read up to 100 secrets at once",
            "description": (
                "Each key is authorized by the caller's read scopes and audited with its own "
                "`secrets.read` line. A key that is absent, expired, soft-deleted or outside the "
                "caller's scopes is listed only in `missing`. Duplicates are answered once."
            ),
            "operationId": "batchGetSecrets",
            "parameters": [ref("parameters", "MinRevision")],
            "requestBody": {
                "required": True,
                "content": json_content(ref("schemas", "BatchGet"), example={"keys": ["team/db", "team/api"]}),
            },
            "responses": secured({
                "200": {"description": "The values the caller may read, and the rest by name",
                        "headers": {"Cache-Control": ref("headers", "CacheControl")},
                        "content": json_content(ref("schemas", "BatchSecrets"))},
                "400": error_response("Bad request", "error retrieving secret", "keys must name 1 to 100 keys"),
                "408": ref("responses", "RequestTimeout"),
                "413": error_response("Body too large", "request too large"),
                "415": ref("responses", "UnsupportedMediaType"),
                "502": ref("responses", "IntegrityFailed"),
            }),
        },
    },
    "/apikeys": {
        "post": {
            "tags": ["API keys"],
            "summary": "Create an API key",
            "description": (
                "Needs `apikeys:admin`. The key text is in this response only. Scopes default to every "
                "`secrets:*` scope; nobody can grant a scope they do not hold. Keys expire after "
                "`expires_in_days` (default 90)."
            ),
            "operationId": "createApiKey",
            "requestBody": {
                "required": True,
                "content": json_content(ref("schemas", "ApiKeyCreate"), example={"name": "ci", "scopes": ["secrets:read:prod/"]}),
            },
            "responses": secured({
                "201": {"description": "The key, shown once",
                        "content": json_content(ref("schemas", "ApiKeyCreated"))},
                "400": error_response("Bad request", "invalid request format", "field 'name' is required"),
                "408": ref("responses", "RequestTimeout"),
                "413": error_response("Body too large", "request too large"),
                "415": ref("responses", "UnsupportedMediaType"),
            }),
        },
        "get": {
            "tags": ["API keys"],
            "summary": "List the tenant's API keys",
            "description": "Needs `apikeys:admin`. Never returns key text or hashes.",
            "operationId": "listApiKeys",
            "responses": secured({
                "200": {"description": "The tenant's live keys",
                        "content": json_content(ref("schemas", "ApiKeyList"))},
            }),
        },
    },
    "/apikeys/{id}": {
        "delete": {
            "tags": ["API keys"],
            "summary": "Revoke an API key",
            "description": "Needs `apikeys:admin`. Effective on the next request.",
            "operationId": "revokeApiKey",
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                            "description": "The key id: the 16 hex characters after `sr_`."}],
            "responses": secured({
                "200": message_200("Revoked"),
                "400": error_response("Not a key id", "invalid request format", "an api key id is 16 hex characters"),
                "404": ref("responses", "NotFound"),
            }),
        },
    },
    "/audit": {
        "get": {
            "tags": ["Audit"],
            "summary": "Read the tenant's audit lines",
            "description": (
                "Needs `audit:read`. The caller's tenant's audit lines, oldest first, across rotated "
                "files (sqlite) or the stream (nats). Lines of other tenants and of refused "
                "credentials are never shown."
            ),
            "operationId": "readAudit",
            "parameters": [
                {"name": "after", "in": "query", "required": False,
                 "description": "Only lines numbered after this (the `next` of the previous page).",
                 "schema": {"type": "integer", "minimum": 0, "maximum": U64_MAX}},
                {"name": "limit", "in": "query", "required": False,
                 "description": "Lines per page (default 100).",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            ],
            "responses": secured({
                "200": {"description": "A page of lines",
                        "content": json_content(ref("schemas", "AuditPage"))},
                "400": error_response("Bad paging parameters", "invalid request format",
                                      "limit must be an integer from 1 to 1000"),
            }),
        },
    },
    "/keys/rotate": {
        "post": {
            "tags": ["Keys"],
            "summary": "Start a new data key for the tenant",
            "description": (
                "Needs `keys:admin`. New writes are sealed under the new data key; old versions "
                "keep opening under theirs (`dek_id` in metadata)."
            ),
            "operationId": "rotateDataKey",
            "responses": secured({
                "200": {"description": "The new data key",
                        "content": json_content(ref("schemas", "DataKey"))},
            }),
        },
    },
    "/healthz": {
        "get": {
            "tags": ["Operations"],
            "summary": "Liveness probe",
            "operationId": "healthz",
            "security": [],
            "responses": {"200": {"description": "The process is alive",
                                  "content": json_content(ref("schemas", "Health"), example={"status": "ok"})}},
        },
    },
    "/readyz": {
        "get": {
            "tags": ["Operations"],
            "summary": "Readiness probe",
            "description": "Ready when the audit trail can append, the store can take a write (a probe record, "
                           "at most once a second; a megabyte free) and the shared state reads back.",
            "operationId": "readyz",
            "security": [],
            "responses": {
                "200": {"description": "Ready to serve",
                        "content": json_content(ref("schemas", "Readiness"), example={"status": "ready"})},
                "503": ref("responses", "Unavailable"),
            },
        },
    },
    "/metrics": {
        "get": {
            "tags": ["Operations"],
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "security": [],
            "responses": {"200": {"description": "Metrics in the Prometheus text exposition format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        },
    },
    "/ui/": {
        "get": {
            "tags": ["Operations"],
            "summary": "The web console",
            "description": "The console's page; its scripts and styles are beside it under /ui/. "
                           "It uses this API with the credential a person signs in with.",
            "operationId": "console",
            "security": [],
            "responses": {"200": {"description": "The console's HTML page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        },
    },
    "/openapi.json": {
        "get": {
            "tags": ["Operations"],
            "summary": "This OpenAPI document",
            "operationId": "openapi",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI 3 document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}},
        },
    },
}

doc = {
    "openapi": "3.0.3",
    "info": {
        "title": "strongroom",
        "version": "0.1.0",
        "description": (
            "strongroom, a secrets server. Its API is a strict superset of the quiva.ai Gateway "
            "secrets API (`PUT /secrets`, `GET /secrets/{key}`, `DELETE /secrets/{key}`): the same "
            "paths, operation ids, field names, status codes and error strings, plus limits on keys "
            "and values, conditional writes, listing, versions, metadata, undelete and operational "
            "endpoints. Every error body is `{\"error\": ..., \"detail\"?: ...}`."
        ),
    },
    "security": [{"bearerAuth": []}, {"apiKeyAuth": []}],
    "tags": [
        {"name": "Secrets", "description": "Secrets stored in a per-account secrets bucket."},
        {"name": "API keys", "description": "API-key management; needs the apikeys:admin scope."},
        {"name": "Audit", "description": "The audit trail; needs the audit:read scope."},
        {"name": "Keys", "description": "Data-key rotation; needs the keys:admin scope."},
        {"name": "Operations", "description": "Liveness, readiness, metrics, the web console and this document. No authentication."},
    ],
    "paths": paths,
    "components": {
        "schemas": schemas,
        "responses": responses,
        "parameters": parameters,
        "headers": headers,
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
        },
    },
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "api", "openapi.json")
with open(out, "w") as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
    f.write("\n")
