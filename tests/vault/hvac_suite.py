"""hvac, the Python client of HashiCorp Vault, against strongroom's Vault-compatible API.

DESIGN section 12: every KV v2 method of `client.secrets.kv.v2`, the token
methods, the system health and mount calls, JWT login, and the errors hvac
maps to exceptions. Each check asserts the values strongroom answers, not
only that no exception was raised. It prints one line per passed check and
stops, exiting 1, with the request, the expectation and the answer at the
first failure. No token, JWT or secret value is ever printed: every line goes
through `scrub`, which replaces them with placeholders.

Run by tests/api/vault_clients.rs, with the interpreter of
target/clients-venv (hvac 2.x). The environment names the server and what the
Rust side set up for it:

  VAULT_ADDR, VAULT_TOKEN   the server and an admin API key of tenant `default`
  CANARY                    a random text; every secret value written here holds it
  JWT_ROLE, JWT_TOKEN       a login role of tenant `default` and a JWT it accepts
  JWT_POLICIES, JWT_TTL     the role's policies (comma separated) and token TTL
  JWT_PREFIX                the key prefix the role's policies may read
  OTHER_NAMESPACE           another tenant
  OTHER_TOKEN               an API key of that tenant
  OTHER_SECRET_PATH         a key that exists only in that tenant ...
  OTHER_SECRET_VALUE        ... written through the quiva API with this value
  TOKENS_FILE               where to append the login tokens this run obtains,
                            one a line, for the caller's canary checks
  DONE_PATH                 the key written last, once every check has passed
"""

import datetime
import importlib.metadata
import json
import os
import re
import sys

import hvac
import hvac.adapters
import hvac.exceptions as exc
import requests

ENV = os.environ
ADDR = ENV["VAULT_ADDR"]
TOKEN = ENV["VAULT_TOKEN"]
CANARY = ENV["CANARY"]
SECRETS = {TOKEN, CANARY, ENV["JWT_TOKEN"], ENV["OTHER_TOKEN"], ENV["OTHER_SECRET_VALUE"]}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
PASSED = 0
HVAC_VERSION = importlib.metadata.version("hvac")


def scrub(text):
    """The text with every credential and secret value replaced by a placeholder."""
    text = str(text)
    for secret in sorted((s for s in SECRETS if s), key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


def expect(cond, what, got=None):
    """Fails the current check with `what` (request and expectation) and `got`."""
    if not cond:
        raise Failed(f"{what}; got {got!r}" if got is not None else what)


def raises(cls, fn, what):
    """Runs fn and returns the exception of class `cls` it raised; fails otherwise."""
    try:
        result = fn()
    except cls as e:
        return e
    except exc.VaultError as e:
        raise Failed(f"{what}: expected {cls.__name__}, got {type(e).__name__}: {e} {e.text!r}")
    raise Failed(f"{what}: expected {cls.__name__}, got success: {result!r}")


def check(name, fn):
    global PASSED
    try:
        fn()
    except Skipped as e:
        print(scrub(f"skip {name}: {e}"), flush=True)
        return
    except Failed as e:
        fail(name, str(e))
    except exc.VaultError as e:
        fail(name, f"unexpected {type(e).__name__}: {e}; body {e.text!r}")
    except Exception as e:  # an assertion in a client call, a KeyError in an answer
        fail(name, f"unexpected {type(e).__name__}: {e!r}")
    PASSED += 1
    print(scrub(f"ok {PASSED:2} {name}"), flush=True)


def fail(name, detail):
    print(scrub(f"FAIL {name}: {detail}"), flush=True)
    print(f"{PASSED} passed, 1 failed", flush=True)
    sys.exit(1)


def client(token=TOKEN, namespace=None):
    return hvac.Client(url=ADDR, token=token, namespace=namespace)


def value(tag):
    return f"{CANARY}-{tag}"


def is_time(text):
    return isinstance(text, str) and RFC3339.match(text) is not None


admin = client()
kv = admin.secrets.kv.v2
P = "hvac/app/db"


def read(path=P, version=None, raise_on_deleted=True):
    return kv.read_secret_version(path, version=version, raise_on_deleted_version=raise_on_deleted)


def metadata(path=P):
    return kv.read_secret_metadata(path)["data"]


def raw(method, path, body=None, content_type="application/json", token=TOKEN):
    """A request hvac has no method for, through hvac's own adapter and headers."""
    c = hvac.Client(url=ADDR, token=token, adapter=hvac.adapters.RawAdapter)
    headers = {"Content-Type": content_type} if body is not None else {}
    data = json.dumps(body) if body is not None else None
    return c.adapter.request(method, path, headers=headers, data=data, raise_exception=False)


def write_meta(**kw):
    return kv.update_metadata(P, **kw)


# ---------------------------------------------------------------- system

def health():
    h = admin.sys.read_health_status(method="GET")
    expect(isinstance(h, dict), "GET /v1/sys/health: expected 200 with JSON",
           getattr(h, "status_code", h))
    expect(h.get("initialized") is True, "sys/health initialized is true", h)
    expect(h.get("sealed") is False, "sys/health sealed is false", h)
    expect(h.get("standby") is False, "sys/health standby is false", h)
    expect(isinstance(h.get("version"), str) and h["version"], "sys/health version is a string", h)
    expect(isinstance(h.get("server_time_utc"), int), "sys/health server_time_utc is an integer", h)
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    expect(abs(h["server_time_utc"] - now) < 60, "sys/health server_time_utc is now", h)


def initialized():
    expect(admin.sys.is_initialized() is True, "GET /v1/sys/init: initialized is true")


def sealed():
    expect(admin.sys.is_sealed() is False, "GET /v1/sys/seal-status: sealed is false")
    s = admin.sys.read_seal_status()
    expect(s.get("sealed") is False and s.get("initialized") is True,
           "GET /v1/sys/seal-status: sealed false, initialized true", s)


def mounts():
    m = admin.sys.list_mounted_secrets_engines()
    expect("data" in m, "GET /v1/sys/mounts: the mounts under data", m)
    secret = m["data"].get("secret/")
    expect(secret is not None, "GET /v1/sys/mounts: data has secret/", m["data"])
    expect(secret.get("type") == "kv", "sys/mounts secret/ type is kv", secret)
    expect((secret.get("options") or {}).get("version") == "2",
           "sys/mounts secret/ options.version is \"2\"", secret)


def ui_mounts():
    """What the vault CLI's kv commands ask first, to learn a path is KV v2."""
    r = raw("GET", "/v1/sys/internal/ui/mounts/secret/hvac/app/db")
    expect(r.status_code == 200, "GET /v1/sys/internal/ui/mounts/secret/...", (r.status_code, r.text))
    d = r.json()["data"]
    expect(d.get("path") == "secret/" and d.get("type") == "kv"
           and (d.get("options") or {}).get("version") == "2",
           "ui/mounts names the secret/ mount as kv version 2", d)


def unsupported_method():
    r = raw("GET", "/v1/secret/destroy/hvac/app/db")
    expect(r.status_code == 405, "GET /v1/secret/destroy/...: 405, as Vault answers",
           (r.status_code, r.text))
    expect(isinstance(r.json().get("errors"), list) and r.json()["errors"],
           "a 405 has Vault's errors list", r.text)


# ---------------------------------------------------------------- token

def lookup_self():
    d = admin.auth.token.lookup_self()["data"]
    expect(d.get("meta", {}).get("tenant") == "default", "lookup-self data.meta.tenant is default", d)
    expect(isinstance(d.get("policies"), list), "lookup-self data.policies is a list", d)
    expect(isinstance(d.get("ttl"), int) and d["ttl"] >= 0, "lookup-self data.ttl is an integer", d)
    expect("expire_time" in d, "lookup-self has data.expire_time", d)
    expect(d["expire_time"] is None or is_time(d["expire_time"]),
           "lookup-self expire_time is null or RFC 3339", d)
    expect(isinstance(d.get("display_name"), str), "lookup-self data.display_name is a string", d)
    expect(admin.is_authenticated() is True, "is_authenticated() with the admin key")
    r = requests.get(f"{ADDR}/v1/auth/token/lookup-self", headers={"Authorization": f"Bearer {TOKEN}"})
    expect(r.status_code == 200 and r.json()["data"]["meta"]["tenant"] == "default",
           "lookup-self with Authorization: Bearer instead of X-Vault-Token", (r.status_code, r.text))


def bad_token():
    bad = client("sr_" + "A" * 43)
    expect(bad.is_authenticated() is False, "is_authenticated() with an unknown token is False")
    e = raises(exc.Forbidden, lambda: bad.secrets.kv.v2.read_secret_version(
        P, raise_on_deleted_version=True), "GET /v1/secret/data/... with an unknown token")
    expect(e.errors == ["permission denied"], "403 errors is [\"permission denied\"]", e.errors)
    nothing = client("")
    e = raises(exc.Forbidden, lambda: nothing.auth.token.lookup_self(),
               "lookup-self without X-Vault-Token")


def namespaces():
    own = client(namespace="default")
    d = own.auth.token.lookup_self()["data"]
    expect(d["meta"]["tenant"] == "default", "X-Vault-Namespace: default names the key's tenant", d)
    d = client(namespace="default/").auth.token.lookup_self()["data"]
    expect(d["meta"]["tenant"] == "default", "X-Vault-Namespace: default/ (a trailing slash)", d)
    other = client(namespace=ENV["OTHER_NAMESPACE"])
    raises(exc.Forbidden, lambda: other.auth.token.lookup_self(),
           "lookup-self with X-Vault-Namespace of another tenant")
    raises(exc.Forbidden, lambda: other.secrets.kv.v2.read_secret_version(
        ENV["OTHER_SECRET_PATH"], raise_on_deleted_version=True),
        "a read with X-Vault-Namespace of another tenant")


def foreign_is_missing():
    path = ENV["OTHER_SECRET_PATH"]
    owner = client(ENV["OTHER_TOKEN"], namespace=ENV["OTHER_NAMESPACE"])
    got = owner.secrets.kv.v2.read_secret_version(path, raise_on_deleted_version=True)
    expect(got["data"]["data"] == {"value": ENV["OTHER_SECRET_VALUE"]},
           "a value written through the quiva API reads as {\"value\": text}", got["data"]["data"])
    foreign = raises(exc.InvalidPath, lambda: read(path), f"GET {path} of another tenant")
    missing = raises(exc.InvalidPath, lambda: read("hvac/never/db"), "GET a missing path")
    expect(missing.json == {"errors": []}, "a missing path's body is {\"errors\":[]}", missing.text)
    expect(foreign.text == missing.text, "another tenant's secret answers exactly as a missing one",
           (foreign.text, missing.text))
    raises(exc.InvalidPath, lambda: kv.read_secret_metadata(path), "metadata of another tenant's key")


def foreign_list():
    path = ENV["OTHER_SECRET_PATH"]
    folder = path.rsplit("/", 1)[0]
    raises(exc.InvalidPath, lambda: kv.list_secrets(folder), f"LIST {folder} of another tenant")


# ---------------------------------------------------------------- KV v2

def configure():
    # strongroom refuses a max_versions above its --max-versions (10 by
    # default, docs/decisions.md), where Vault takes any: 8 is under both.
    r = kv.configure(max_versions=8, cas_required=False, delete_version_after="0s")
    expect(getattr(r, "status_code", 200) in (200, 204), "POST /v1/secret/config", r)
    c = kv.read_configuration()["data"]
    expect(c.get("max_versions") == 8, "secret/config max_versions is 8", c)
    expect(c.get("cas_required") is False, "secret/config cas_required is false", c)
    expect(c.get("delete_version_after") == "0s", "secret/config delete_version_after is \"0s\"", c)


def config_cas_required():
    kv.configure(max_versions=8, cas_required=True)
    expect(kv.read_configuration()["data"]["cas_required"] is True, "config cas_required true")
    raises(exc.InvalidRequest, lambda: kv.create_or_update_secret("hvac/cfg/x", {"k": value("cfg")}),
           "a write without cas while the mount's cas_required is true")
    w = kv.create_or_update_secret("hvac/cfg/x", {"k": value("cfg")}, cas=0)
    expect(w["data"]["version"] == 1, "a write with cas=0 under the mount's cas_required", w)
    kv.configure(max_versions=8, cas_required=False)
    expect(kv.read_configuration()["data"]["cas_required"] is False, "config cas_required false")


def create_only():
    w = kv.create_or_update_secret(P, {"user": "app", "password": value("1")}, cas=0)
    d = w["data"]
    expect(d.get("version") == 1, "POST data cas=0 on a new path makes version 1", d)
    expect(d.get("destroyed") is False and d.get("deletion_time") == "", "a new version is live", d)
    expect(is_time(d.get("created_time")), "created_time is RFC 3339", d)
    expect("custom_metadata" in d, "the write's answer has custom_metadata", d)
    e = raises(exc.InvalidRequest, lambda: kv.create_or_update_secret(P, {"user": "x"}, cas=0),
               "POST data cas=0 on an existing path")
    expect(any("check-and-set parameter did not match the current version" in m for m in e.errors),
           "the cas error text", e.errors)


def cas_writes():
    w = kv.create_or_update_secret(P, {"user": "app", "password": value("2")}, cas=1)
    expect(w["data"]["version"] == 2, "POST data cas=1 at version 1 makes version 2", w)
    raises(exc.InvalidRequest, lambda: kv.create_or_update_secret(P, {"user": "x"}, cas=1),
           "POST data cas=1 at version 2")
    w = kv.create_or_update_secret(P, {"user": "app", "password": value("3")})
    expect(w["data"]["version"] == 3, "POST data without cas makes version 3", w)


def reads():
    r = read()["data"]
    expect(r["data"] == {"user": "app", "password": value("3")}, "read_secret: the latest data",
           r["data"])
    m = r["metadata"]
    expect(m.get("version") == 3 and m.get("destroyed") is False and m.get("deletion_time") == "",
           "read_secret metadata: version 3, live", m)
    expect(is_time(m.get("created_time")), "read metadata created_time is RFC 3339", m)
    r1 = kv.read_secret(P, raise_on_deleted_version=True)["data"]
    expect(r1["data"]["password"] == value("3"), "read_secret() equals read_secret_version()")
    for v in (1, 2):
        rv = read(version=v)["data"]
        expect(rv["data"]["password"] == value(str(v)) and rv["metadata"]["version"] == v,
               f"read_secret_version(version={v})", rv)


def versions_by_number():
    latest = read()["data"]
    zero = read(version=0)["data"]
    expect(zero["data"] == latest["data"] and zero["metadata"]["version"] == 3,
           "read_secret_version(version=0) is the latest, as in Vault", zero["metadata"])
    e = raises(exc.InvalidPath, lambda: read(version=99), "read_secret_version(version=99)")
    expect(e.json is not None, "a version that never was is a JSON 404", e.text)


def any_json_values():
    """Vault keeps any JSON in a secret's data; hvac users send numbers and nesting."""
    data = {
        "port": 5432, "ratio": 0.5, "enabled": True, "nothing": None,
        "nested": {"db": {"password": value("nested")}}, "list": ["a", 1],
        "unicode": "h\u00e9llo \u2713", "escapes": "a\"b\\c\n\t",
    }
    w = kv.create_or_update_secret("hvac/json/any", data)
    expect(w["data"]["version"] == 1, "a write of any JSON values", w)
    got = kv.read_secret_version("hvac/json/any", raise_on_deleted_version=True)["data"]["data"]
    expect(got == data, "every JSON value reads back as written", got)


def hvac_patch():
    w = kv.patch(P, {"extra": "e"})
    expect(w["data"]["version"] == 4, "hvac patch (read, then write with cas) makes version 4", w)
    expect(read()["data"]["data"] == {"user": "app", "password": value("3"), "extra": "e"},
           "hvac patch merged into the data")


def merge_patch():
    r = raw("PATCH", f"/v1/secret/data/{P}", {"data": {"extra": None, "added": "a"}},
            "application/merge-patch+json")
    expect(r.status_code == 200, "PATCH /v1/secret/data (merge-patch+json): 200", (r.status_code, r.text))
    expect(r.json()["data"]["version"] == 5, "PATCH makes version 5", r.text)
    got = read()["data"]["data"]
    expect(got == {"user": "app", "password": value("3"), "added": "a"},
           "PATCH merged: null removed a field, a new one added", got)
    r = raw("PATCH", "/v1/secret/data/hvac/never/patched", {"data": {"a": "b"}},
            "application/merge-patch+json")
    expect(r.status_code == 404, "PATCH of a missing path: 404", (r.status_code, r.text))
    raises(exc.InvalidPath, lambda: read("hvac/never/patched"), "PATCH of a missing path made nothing")


def delete_latest():
    r = kv.delete_latest_version_of_secret(P)
    expect(getattr(r, "status_code", 200) in (200, 204), "DELETE /v1/secret/data", r)
    e = raises(exc.InvalidPath, lambda: read(raise_on_deleted=True), "read after delete (raise)")
    body = read(raise_on_deleted=False)
    d = body["data"]
    expect(d["data"] is None, "a deleted version's data is null", d)
    m = d["metadata"]
    expect(m["version"] == 5 and is_time(m["deletion_time"]) and m["destroyed"] is False,
           "a deleted version's metadata in the 404 body", m)
    # Each answer has its own request_id: compare what they say of the secret.
    expect(e.json is not None and e.json["data"] == body["data"],
           "the 404 body is JSON (Content-Type: application/json)", e.text)
    same = kv.read_secret(P, raise_on_deleted_version=False)
    expect(same["data"] == body["data"], "read_secret(raise_on_deleted_version=False) answers the same",
           same)
    expect(read(version=4)["data"]["data"]["extra"] == "e", "older versions still read")
    md = metadata()
    expect(md["current_version"] == 5, "metadata current_version 5 after a delete", md)
    expect(is_time(md["versions"]["5"]["deletion_time"]), "versions[5].deletion_time is set", md)


def undelete():
    kv.undelete_secret_versions(P, [5])
    d = read()["data"]
    expect(d["metadata"]["version"] == 5 and d["metadata"]["deletion_time"] == "",
           "undelete restores version 5", d["metadata"])
    expect(d["data"]["added"] == "a", "undeleted data", d["data"])


def delete_versions():
    kv.delete_secret_versions(P, [1])
    raises(exc.InvalidPath, lambda: read(version=1), "read of deleted version 1")
    v1 = metadata()["versions"]["1"]
    expect(is_time(v1["deletion_time"]) and v1["destroyed"] is False,
           "versions[1] deleted, not destroyed", v1)
    expect(read()["data"]["metadata"]["version"] == 5, "deleting version 1 leaves the latest")
    kv.undelete_secret_versions(P, [1])
    expect(read(version=1)["data"]["data"]["password"] == value("1"), "undelete version 1")


def destroy_versions():
    kv.destroy_secret_versions(P, [2])
    v2 = metadata()["versions"]["2"]
    expect(v2["destroyed"] is True, "versions[2].destroyed after destroy", v2)
    e = raises(exc.InvalidPath, lambda: read(version=2, raise_on_deleted=False),
               "read of destroyed version 2 (raise_on_deleted_version=False)")
    expect(e.json is not None and e.json["data"]["data"] is None
           and e.json["data"]["metadata"]["destroyed"] is True,
           "a destroyed version's 404 body has its metadata", e.text)
    kv.undelete_secret_versions(P, [2])
    raises(exc.InvalidPath, lambda: read(version=2), "undelete does not bring back a destroyed version")


def read_metadata():
    md = metadata()
    expect(md["current_version"] == 5, "metadata current_version", md)
    expect(md["oldest_version"] in (0, 1), "metadata oldest_version before any pruning", md)
    expect(isinstance(md["max_versions"], int), "metadata max_versions is an integer", md)
    expect(md["cas_required"] is False, "metadata cas_required false", md)
    expect(md["delete_version_after"] == "0s", "metadata delete_version_after \"0s\"", md)
    expect(md["custom_metadata"] in (None, {}), "no custom_metadata yet", md)
    expect(is_time(md["created_time"]) and is_time(md["updated_time"]), "created/updated_time", md)
    expect(sorted(md["versions"]) == ["1", "2", "3", "4", "5"], "versions map keys", md["versions"])
    for n, v in md["versions"].items():
        expect(is_time(v["created_time"]) and "deletion_time" in v and "destroyed" in v,
               f"versions[{n}] has created_time, deletion_time, destroyed", v)
    expect(CANARY not in json.dumps(md), "no value in the metadata")


def max_versions():
    write_meta(max_versions=2)
    expect(metadata()["max_versions"] == 2, "update_metadata max_versions=2")
    w = kv.create_or_update_secret(P, {"user": "app", "password": value("6")})
    expect(w["data"]["version"] == 6, "write after max_versions=2", w)
    md = metadata()
    expect(sorted(md["versions"]) == ["5", "6"], "only the 2 newest versions are kept",
           sorted(md["versions"]))
    expect(md["oldest_version"] == 5 and md["current_version"] == 6, "oldest 5, current 6", md)
    raises(exc.InvalidPath, lambda: read(version=4), "a pruned version reads as 404")


def cas_required():
    write_meta(max_versions=2, cas_required=True)
    expect(metadata()["cas_required"] is True, "update_metadata cas_required=True")
    raises(exc.InvalidRequest, lambda: kv.create_or_update_secret(P, {"user": "x"}),
           "a write without cas on a key with cas_required")
    w = kv.create_or_update_secret(P, {"user": "app", "password": value("7")}, cas=6)
    expect(w["data"]["version"] == 7, "a write with the right cas on a cas_required key", w)
    write_meta(max_versions=2, cas_required=False)
    expect(metadata()["cas_required"] is False, "update_metadata cas_required=False")


def custom_and_expiry():
    custom = {"owner": "team-a", "tier": "gold"}
    write_meta(custom_metadata=custom, delete_version_after="1h")
    md = metadata()
    expect(md["custom_metadata"] == custom, "update_metadata custom_metadata", md)
    expect(md["delete_version_after"] == "1h0m0s",
           "delete_version_after answers as a Go duration, as Vault does", md["delete_version_after"])
    expect(md["max_versions"] == 2, "max_versions unchanged when not sent", md)
    expect(read()["data"]["metadata"]["custom_metadata"] == custom,
           "a read's metadata carries custom_metadata")
    write_meta(delete_version_after="0s")
    md = metadata()
    expect(md["delete_version_after"] == "0s", "delete_version_after back to 0s", md)
    expect(md["custom_metadata"] == custom, "custom_metadata unchanged when not sent", md)


def patch_metadata():
    if not hasattr(kv, "patch_metadata"):
        raise Skipped(f"hvac {HVAC_VERSION} has no patch_metadata")
    kv.patch_metadata(P, custom_metadata={"tier": "silver"})
    md = metadata()
    expect(md["custom_metadata"] == {"owner": "team-a", "tier": "silver"}, "patch_metadata merged", md)


def raw_patch_metadata():
    """What `vault kv metadata patch` sends: a merge patch of the metadata."""
    r = raw("PATCH", f"/v1/secret/metadata/{P}",
            {"custom_metadata": {"tier": "silver", "owner": None, "new": "n"}},
            "application/merge-patch+json")
    expect(r.status_code in (200, 204), "PATCH /v1/secret/metadata (merge-patch+json)",
           (r.status_code, r.text))
    md = metadata()
    expect(md["custom_metadata"] == {"tier": "silver", "new": "n"},
           "the metadata patch merged custom_metadata (null removes a name)", md["custom_metadata"])
    expect(md["max_versions"] == 2 and md["cas_required"] is False,
           "fields the patch does not name are kept", md)


def listing():
    for p in ("hvac/list/a", "hvac/list/b", "hvac/list/sub/c", "hvac/list/sub/deeper/d"):
        kv.create_or_update_secret(p, {"k": value(p)})
    top = kv.list_secrets("hvac/list")["data"]["keys"]
    expect(sorted(top) == ["a", "b", "sub/"] and len(top) == 3,
           "LIST /v1/secret/metadata/hvac/list: children, folders ending in /", top)
    expect(sorted(kv.list_secrets("hvac/list/")["data"]["keys"]) == ["a", "b", "sub/"],
           "LIST with a trailing slash")
    sub = kv.list_secrets("hvac/list/sub")["data"]["keys"]
    expect(sorted(sub) == ["c", "deeper/"], "LIST of a nested folder", sub)
    root = kv.list_secrets("")["data"]["keys"]
    expect("hvac/" in root and not any(k.startswith("hvac/") and k != "hvac/" for k in root),
           "LIST of the mount's root", root)
    r = raw("GET", "/v1/secret/metadata/hvac/list?list=true")
    expect(r.status_code == 200 and sorted(r.json()["data"]["keys"]) == ["a", "b", "sub/"],
           "GET ...?list=true lists as LIST does", (r.status_code, r.text))
    raises(exc.InvalidPath, lambda: kv.list_secrets("hvac/nothing-here"), "LIST of an empty folder")
    raises(exc.InvalidPath, lambda: kv.list_secrets("hvac/list/a"), "LIST of a key that is no folder")
    kv.delete_latest_version_of_secret("hvac/list/b")
    expect("b" in kv.list_secrets("hvac/list")["data"]["keys"],
           "a soft-deleted key is still listed (its metadata remains), as in Vault")
    kv.delete_metadata_and_all_versions("hvac/list/b")
    expect(sorted(kv.list_secrets("hvac/list")["data"]["keys"]) == ["a", "sub/"],
           "a key whose metadata is deleted leaves the listing")


def delete_all():
    r = kv.delete_metadata_and_all_versions(P)
    expect(getattr(r, "status_code", 200) in (200, 204), "DELETE /v1/secret/metadata", r)
    raises(exc.InvalidPath, lambda: kv.read_secret_metadata(P), "metadata after delete_metadata")
    e = raises(exc.InvalidPath, lambda: read(raise_on_deleted=False), "data after delete_metadata")
    expect(e.json == {"errors": []}, "a destroyed key answers as a missing one", e.text)
    w = kv.create_or_update_secret(P, {"user": "again"}, cas=0)
    expect(w["data"]["version"] == 1, "the key starts again at version 1", w)
    kv.delete_metadata_and_all_versions(P)


def invalid_path():
    e = raises(exc.InvalidRequest, lambda: kv.create_or_update_secret("hvac/bad..key", {"k": "v"}),
               "POST data at a path outside the key rule")
    expect(isinstance(e.errors, list) and e.errors, "400 has Vault's errors list", e.text)


# ---------------------------------------------------------------- JWT login

def jwt_login():
    role, jwt = ENV["JWT_ROLE"], ENV["JWT_TOKEN"]
    policies = sorted(ENV["JWT_POLICIES"].split(","))
    ttl = int(ENV["JWT_TTL"])
    prefix = ENV["JWT_PREFIX"]
    kv.create_or_update_secret(f"{prefix}app", {"password": value("jwt")})
    kv.create_or_update_secret("hvac/outside/app", {"password": value("outside")})

    # A token of "" sends no X-Vault-Token (None would read VAULT_TOKEN).
    bad = client("")
    e = raises(exc.VaultError, lambda: bad.auth.jwt.jwt_login(role=role, jwt=jwt[:-4] + "AAAA"),
               "POST /v1/auth/jwt/login with a bad signature")
    expect(type(e) in (exc.InvalidRequest, exc.Forbidden, exc.Unauthorized),
           "a refused login is a 4xx", type(e).__name__)
    expect(jwt not in (e.text or ""), "the refusal does not echo the JWT")
    expect(not bad.adapter.token, "a refused login sets no token")

    elsewhere = client("", namespace=ENV["OTHER_NAMESPACE"])
    e = raises(exc.VaultError, lambda: elsewhere.auth.jwt.jwt_login(role=role, jwt=jwt),
               "POST /v1/auth/jwt/login with X-Vault-Namespace of a tenant without the role")
    expect(type(e) in (exc.InvalidRequest, exc.Forbidden, exc.Unauthorized),
           "a login to a tenant without the role is a 4xx", type(e).__name__)

    user = client("")
    r = user.auth.jwt.jwt_login(role=role, jwt=jwt)
    auth = r["auth"]
    token = auth["client_token"]
    SECRETS.add(token)
    with open(ENV["TOKENS_FILE"], "a") as f:
        f.write(token + "\n")
    expect(token.startswith("srt_"), "the login's client_token is a strongroom token")
    expect(user.adapter.token == token, "hvac keeps the login's token")
    expect(sorted(auth["policies"]) == policies, "auth.policies are the role's", auth["policies"])
    expect(sorted(auth["token_policies"]) == policies, "auth.token_policies", auth["token_policies"])
    expect(0 < auth["lease_duration"] <= ttl and auth["lease_duration"] >= ttl - 60,
           "auth.lease_duration is the role's TTL", auth["lease_duration"])
    expect(auth["renewable"] is False, "auth.renewable is false", auth["renewable"])

    got = user.secrets.kv.v2.read_secret_version(f"{prefix}app", raise_on_deleted_version=True)
    expect(got["data"]["data"] == {"password": value("jwt")}, "the login token reads under its prefix")
    raises(exc.Forbidden, lambda: user.secrets.kv.v2.read_secret_version(
        "hvac/outside/app", raise_on_deleted_version=True), "the login token outside its policies")
    raises(exc.Forbidden, lambda: user.secrets.kv.v2.create_or_update_secret(
        f"{prefix}app", {"password": "x"}), "the login token cannot write")

    d = user.auth.token.lookup_self()["data"]
    expect(sorted(d["policies"]) == policies, "lookup-self names the role's policies", d)
    expect(0 < d["ttl"] <= ttl and d["ttl"] >= ttl - 60, "lookup-self ttl is the role's TTL", d)
    expect(is_time(d["expire_time"]), "a login token has an expire_time", d)
    expect(d["meta"]["tenant"] == "default", "lookup-self meta.tenant", d)
    expect(user.is_authenticated() is True, "is_authenticated() with the login token")

    user.auth.token.revoke_self()
    expect(user.is_authenticated() is False, "is_authenticated() after revoke-self is False")
    raises(exc.Forbidden, lambda: user.auth.token.lookup_self(), "lookup-self after revoke-self")
    raises(exc.Forbidden, lambda: user.secrets.kv.v2.read_secret_version(
        f"{prefix}app", raise_on_deleted_version=True), "a read after revoke-self")


def done():
    kv.create_or_update_secret(ENV["DONE_PATH"], {"k": value("done")})


CHECKS = [
    ("sys: read_health_status(method='GET')", health),
    ("sys: is_initialized()", initialized),
    ("sys: is_sealed(), read_seal_status()", sealed),
    ("sys: list_mounted_secrets_engines() shows secret/ as kv v2", mounts),
    ("sys: internal/ui/mounts, as the vault CLI asks", ui_mounts),
    ("errors: a method a path does not take is 405", unsupported_method),
    ("token: lookup_self() and is_authenticated()", lookup_self),
    ("errors: an unknown token is Forbidden, is_authenticated() False", bad_token),
    ("errors: X-Vault-Namespace of another tenant is Forbidden", namespaces),
    ("errors: another tenant's secret is InvalidPath exactly like a missing one", foreign_is_missing),
    ("errors: another tenant's folder does not list", foreign_list),
    ("kv: configure() and read_configuration()", configure),
    ("kv: the mount's cas_required", config_cas_required),
    ("kv: create_or_update_secret(cas=0) creates only", create_only),
    ("kv: create_or_update_secret with cas=N, a mismatch, and without cas", cas_writes),
    ("kv: read_secret and read_secret_version(version=)", reads),
    ("kv: read_secret_version(version=0) and a version that never was", versions_by_number),
    ("kv: data of any JSON values, unicode and escapes", any_json_values),
    ("kv: patch() (hvac's read and cas write)", hvac_patch),
    ("kv: PATCH application/merge-patch+json", merge_patch),
    ("kv: delete_latest_version_of_secret, raise_on_deleted_version True/False", delete_latest),
    ("kv: undelete_secret_versions", undelete),
    ("kv: delete_secret_versions", delete_versions),
    ("kv: destroy_secret_versions", destroy_versions),
    ("kv: read_secret_metadata", read_metadata),
    ("kv: update_metadata(max_versions) prunes old versions", max_versions),
    ("kv: update_metadata(cas_required)", cas_required),
    ("kv: update_metadata(custom_metadata, delete_version_after)", custom_and_expiry),
    ("kv: patch_metadata", patch_metadata),
    ("kv: PATCH metadata, as the vault CLI sends it", raw_patch_metadata),
    ("kv: list_secrets with nested folders", listing),
    ("kv: delete_metadata_and_all_versions", delete_all),
    ("errors: a path outside the key rule is InvalidRequest", invalid_path),
    ("jwt: jwt_login, reads with its token, lookup_self, revoke_self", jwt_login),
    ("done marker written", done),
]


def main():
    print(f"hvac {HVAC_VERSION}, requests {requests.__version__}", flush=True)
    for name, fn in CHECKS:
        check(name, fn)
    print(f"{PASSED} passed, 0 failed", flush=True)


if __name__ == "__main__":
    main()
