#!/usr/bin/env python3
"""Real-browser test of the strongroom web console (/ui/), in headless Chromium.

Starts `$STRONGROOM_BIN serve` on port 0 with a fresh data dir (or, for
development, uses a running server at CONSOLE_URL with the admin key
CONSOLE_KEY). Walks the console as a person would: sign-in, folders,
reveal/copy/hide, edit with a conflict, delete/undelete/destroy, API keys,
a 403 in words, paging past 1,000 keys, live updates, the audit trail, expiry.
Then checks that no secret value or credential reached a URL, the title,
history or storage, and fails on any browser console error it did not expect
(each expected one, an HTTP error the scenario provokes on purpose, is listed).
Checks accessibility with axe-core (tests/console/vendor/axe.min.js, MPL-2.0)
on every main screen, failing on serious or critical violations.

Run: tests/console/run.sh (or python3 tests/console/test_console.py with
selenium installed). Screenshots go to $SCREENSHOT_DIR
(default <repo>/target/console-screenshots).
"""
import base64
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHOTS = Path(os.environ.get("SCREENSHOT_DIR") or REPO / "target" / "console-screenshots")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download

RUN = secrets.token_hex(4)
CANARY = f"console-canary-{RUN}"
SECRET = "team/app/db.password"
BULK = 1005
JWT_SECRET = secrets.token_urlsafe(32)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "jwt"


def rs256_token(claims):
    """A platform JWT signed with the RSA fixture (openssl signs it)."""
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(FIXTURES / "rsa.key")],
                         input=f"{head}.{body}".encode(), check=True, capture_output=True).stdout
    return f"{head}.{body}.{b64(sig)}"


class Idp:
    """tests/oidc/provider.mjs on a free loopback port."""

    def __init__(self, proc, issuer):
        self.proc, self.issuer = proc, issuer

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_idp(tmp):
    import socket
    modules = REPO / "target" / "oidc-node" / "node_modules"
    if not (modules / "oidc-provider" / "package.json").exists():
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix",
                        str(modules.parent), "oidc-provider@8.8.1"], check=True)
    (tmp / "client-secret").write_text("console-client-secret\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["node", str(REPO / "tests" / "oidc" / "provider.mjs"), str(port), str(tmp / "client-secret")],
                            env={**os.environ, "OIDC_NODE_MODULES": str(modules)},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("listening "):
            issuer = line.split(" ", 1)[1].strip()
            break
    else:
        raise RuntimeError("the OpenID provider did not start")
    # Keep reading: a closed pipe would end the provider at its next line.
    import threading
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return Idp(proc, issuer)


def hs256_token(claims):
    """A JWT signed with the server's HS256 secret."""
    import hashlib
    import hmac
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(JWT_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


# ---- the server ------------------------------------------------------------

class Server:
    """The strongroom binary on port 0 in a fresh temp data dir."""

    def __init__(self, binary):
        self.tmp = Path(tempfile.mkdtemp(prefix="sr-console-"))
        self.data = self.tmp / "data"
        self.log = open(self.tmp / "server.log", "wb")
        env = {**os.environ, "STRONGROOM_DATA_DIR": str(self.data), "STRONGROOM_LOG_FORMAT": "json"}
        for k in ("STRONGROOM_JWT_PUBLIC_KEYS", "STRONGROOM_JWT_JWKS_URL", "STRONGROOM_LISTEN"):
            env.pop(k, None)
        env["STRONGROOM_JWT_HS256_SECRET"] = JWT_SECRET
        # Identity providers: one whose key is the RSA fixture (a workload's
        # login, t_login_token), and a real OpenID provider (panva's
        # oidc-provider, tests/oidc/provider.mjs) people sign in at.
        self.idp = start_idp(self.tmp)
        providers = self.tmp / "providers.json"
        providers.write_text(json.dumps([
            {"name": "ci", "issuer": "https://ci.example.test", "jwks_file": str(FIXTURES / "rsa.pub")},
            {"name": "corp", "issuer": self.idp.issuer, "client_id": "strongroom",
             "client_secret_file": str(self.tmp / "client-secret")},
        ]))
        env["STRONGROOM_OIDC_PROVIDERS"] = str(providers)
        # With JWTs on, serve issues no bootstrap key: issue the admin key first.
        self.key = subprocess.run(
            [binary, "apikey", "create", "--tenant", "default", "--name", "bootstrap", "--scopes",
             "secrets:read,secrets:write,secrets:delete,secrets:list,apikeys:admin,audit:read,keys:admin,auth:admin"],
            env=env, check=True, capture_output=True, text=True).stdout.strip()
        self.proc = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.addr = None
        deadline = time.time() + 20
        while time.time() < deadline and not self.addr:
            if self.proc.poll() is not None:
                raise RuntimeError("strongroom exited early:\n" + (self.tmp / "server.log").read_text()[-2000:])
            for line in (self.tmp / "server.log").read_text(errors="replace").splitlines():
                line = line.strip()
                if line.startswith("{") and '"listening"' in line:
                    self.addr = json.loads(line)["fields"]["addr"]
            time.sleep(0.05)
        if not self.addr:
            self.stop()
            raise RuntimeError("no listening address from strongroom within 20 s")
        self.url = "http://" + self.addr

    def stop(self):
        self.idp.stop()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- direct HTTP, the "second session" ----------------------------------------

class Api:
    def __init__(self, origin, key):
        self.origin, self.key = origin, key

    def call(self, method, path, body=None, headers=None, key=None):
        h = {"X-Api-Key": key or self.key, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.origin + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def put(self, key, value):
        status, body, headers = self.call("PUT", "/secrets", {"key": key, "value": value})
        assert status == 200, (status, body)
        return int(headers["ETag"].strip('"'))

    def get(self, key):
        status, body, headers = self.call("GET", "/secrets/" + key)
        return status, (json.loads(body).get("value") if status == 200 else None), headers.get("ETag")

    def status_of_stream(self, path):
        """Status of a GET that may be a never-ending stream (read headers only)."""
        u = urllib.parse.urlsplit(self.origin)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        c.request("GET", path, headers={"X-Api-Key": self.key, "Accept": "text/event-stream"})
        status = c.getresponse().status
        c.close()
        return status

    def seed(self, prefix, n):
        u = urllib.parse.urlsplit(self.origin)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
        for i in range(n):
            c.request("PUT", "/secrets", json.dumps({"key": f"{prefix}k{i:04d}", "value": f"bulk-{i}"}),
                      {"X-Api-Key": self.key, "Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
            if r.getheader("Connection", "").lower() == "close":
                c.close()
        c.close()


# ---- the browser ---------------------------------------------------------------

class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="sr-console-chrome-")
        o = webdriver.ChromeOptions()
        o.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1440,1000", f"--user-data-dir={self.profile}"):
            o.add_argument(a)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=o)
        self.d.set_script_timeout(30)
        self.console = []
        self.perf = []
        self.axe_src = (HERE / "vendor" / "axe.min.js").read_text() if (HERE / "vendor" / "axe.min.js").is_file() else None

    def drain_logs(self):
        self.console += self.d.get_log("browser")
        for e in self.d.get_log("performance"):
            self.perf.append(json.loads(e["message"])["message"])

    def quit(self):
        try:
            self.d.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # element helpers
    def el(self, id_):
        return self.d.find_element(By.ID, id_)

    def wait(self, cond, what, timeout=10):
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.1,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: cond())
        except TimeoutException:
            raise AssertionError("timed out waiting for " + what) from None

    def exists(self, id_):
        return bool(self.d.find_elements(By.ID, id_))

    def visible(self, id_):
        found = self.d.find_elements(By.ID, id_)
        return bool(found) and found[0].is_displayed()

    def wait_visible(self, id_, timeout=10):
        self.wait(lambda: self.visible(id_), "#" + id_ + " to show", timeout)
        return self.el(id_)

    def click(self, id_):
        """Clicks #id once it shows and is enabled (re-finding it if the view re-rendered)."""
        def attempt():
            e = self.el(id_)
            if not (e.is_displayed() and e.is_enabled()):
                return False
            e.click()
            return True
        self.wait(lambda: self.exists(id_) and attempt(), "#" + id_ + " to be clickable")

    def click_link(self, text):
        def attempt():
            found = self.d.find_elements(By.LINK_TEXT, text)
            if not found:
                return False
            found[0].click()
            return True
        self.wait(attempt, f"link {text!r}")

    def click_css(self, selector):
        def attempt():
            found = self.d.find_elements(By.CSS_SELECTOR, selector)
            if not found or not found[0].is_displayed():
                return False
            found[0].click()
            return True
        self.wait(attempt, selector + " to be clickable")

    def type(self, id_, text):
        e = self.wait_visible(id_)
        e.clear()
        if text:
            e.send_keys(text)
        else:  # clear() fires no input event: delete by keyboard so the page notices
            e.send_keys("x", Keys.BACKSPACE)

    def text(self, id_):
        return self.el(id_).text

    def wait_text(self, id_, sub, timeout=10):
        self.wait(lambda: self.exists(id_) and sub in self.el(id_).text, f"#{id_} to contain {sub!r}", timeout)

    def page_text(self):
        return self.d.execute_script("return document.body.innerText")

    def wait_page_text(self, sub, timeout=10):
        self.wait(lambda: sub in self.page_text(), f"the page to say {sub!r}", timeout)

    def h1(self):
        return self.d.execute_script("const h = document.querySelector('#view:not([hidden]) h1, #signin:not([hidden]) h1'); return h ? h.textContent : ''")

    def clipboard(self):
        return self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "navigator.clipboard.readText().then(done, (e) => done('CLIPBOARD-ERROR ' + e));")

    def dom_dump(self):
        """All text, attribute values and form values in the document."""
        return self.d.execute_script("""
            const out = [document.documentElement.outerHTML];
            for (const e of document.querySelectorAll('input, textarea, select')) out.push(e.value);
            return out.join('\\n');""")

    def shot(self, name, full=True):
        """A PNG of the whole page (up to 3000 px tall), or of the viewport."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / (name + ".png")
        if not full:
            self.d.save_screenshot(str(path))
            return
        m = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size, view = m["cssContentSize"], m["cssLayoutViewport"]
        clip = {"x": 0, "y": 0, "width": view["clientWidth"], "height": min(size["height"], 3000), "scale": 1}
        png = self.d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.write_bytes(base64.b64decode(png["data"]))

    def axe(self, name):
        if self.axe_src is None:
            return
        if not self.d.execute_script("return typeof window.axe === 'object'"):
            self.d.execute_script(self.axe_src)
        result = self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']}).then((r) => done(r.violations.map((v) => ({"
            "id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' '))}))),"
            "(e) => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));")
        bad = [v for v in result if v["impact"] in ("serious", "critical")]
        minor = [v["id"] for v in result if v not in bad]
        if minor:
            print(f"     axe on {name}: minor findings {minor}")
        assert not bad, f"axe violations on {name}: " + json.dumps(bad, indent=1)


# ---- the scenario ------------------------------------------------------------------

class Scenario:
    def __init__(self):
        self.passed = 0
        self.expected = []  # (path regex, status, why)
        self.server = None
        binary = os.environ.get("STRONGROOM_BIN")
        if os.environ.get("CONSOLE_URL"):
            self.base = os.environ["CONSOLE_URL"]
            self.key = os.environ.get("CONSOLE_KEY") or sys.exit("CONSOLE_URL needs CONSOLE_KEY (an admin API key)")
        else:
            if not binary:
                sys.exit("set STRONGROOM_BIN to the strongroom binary (or CONSOLE_URL and CONSOLE_KEY)")
            self.server = Server(binary)
            self.key = self.server.key
            self.base = self.server.url + "/ui/"
        u = urllib.parse.urlsplit(self.base)
        self.origin = f"{u.scheme}://{u.netloc}"
        self.api = Api(self.origin, self.key)
        self.credentials = [self.key]
        self.b = None

    def expect_error(self, path_re, status, why):
        """An HTTP error the scenario provokes on purpose; Chrome logs it."""
        self.expected.append((re.compile(path_re), status, why))

    def ok(self, name, started):
        self.passed += 1
        print(f"ok   {name} ({time.time() - started:.1f}s)", flush=True)

    def run(self):
        steps = [
            ("server answers and the console is served", self.t_served),
            ("sign-in page explains where the key comes from", self.t_signin_page),
            ("a wrong key is refused in words", self.t_bad_key),
            ("sign in with the bootstrap key", self.t_sign_in),
            ("create a nested secret", self.t_create),
            ("find it through the folders and breadcrumb", self.t_folders),
            ("reveal, copy and hide the value", self.t_reveal),
            ("edit it (If-Match)", self.t_edit),
            ("a conflict: reload theirs", self.t_conflict_reload),
            ("a conflict: overwrite with mine", self.t_conflict_overwrite),
            ("delete and undelete", self.t_delete_undelete),
            ("destroy asks for the key's name", self.t_destroy),
            ("create an API key, shown once, copied", self.t_apikey_create),
            ("a missing scope is explained in words", self.t_forbidden),
            ("revoke the API key", self.t_apikey_revoke),
            ("page past 1,000 keys", self.t_paging),
            ("the list refreshes live from /watch", self.t_live),
            ("the audit trail shows the session's actions", self.t_audit),
            ("expiry and the expiring-soon view", self.t_expiring),
            ("360 px wide", self.t_narrow),
            ("keyboard: focus order and visible focus", self.t_keyboard),
            ("sign in with a JWT", self.t_jwt),
            ("sign in with a workload's login token", self.t_login_token),
            ("a cancelled sign-in at the identity provider is explained", self.t_oidc_cancelled),
            ("sign in with the identity provider", self.t_oidc),
            ("sign out forgets the key and the value", self.t_sign_out),
            ("no value or credential in URLs, title, history or storage", self.t_privacy),
            ("a reload asks for the key again", self.t_reload),
            ("no unexpected browser console errors", self.t_console_errors),
        ]
        failed = 0
        t0 = time.time()
        shutil.rmtree(SHOTS, ignore_errors=True)  # only this run's screens
        try:
            self.b = Browser()
            self.b.d.execute_cdp_cmd("Browser.grantPermissions", {
                "origin": self.origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
            for name, fn in steps:
                started = time.time()
                try:
                    fn()
                    self.ok(name, started)
                except Exception:
                    failed = 1
                    print(f"FAIL {name}\n" + traceback.format_exc(), flush=True)
                    try:
                        self.b.shot("failure")
                        self.b.drain_logs()
                        for e in self.b.console[-15:]:
                            print("     browser:", e.get("level"), e.get("message", "")[:300])
                    except Exception:
                        pass
                    break
        finally:
            if self.b:
                self.b.quit()
            if self.server:
                self.server.stop()
        print(f"screenshots in {SHOTS}; {time.time() - t0:.0f}s in all")
        print(f"console: {self.passed} passed, {failed} failed")
        return failed == 0

    # ---- steps

    def open_console(self):
        self.b.d.get(self.base)
        self.b.wait(lambda: self.b.el("signin-fieldset").is_enabled(), "the console script to start")

    def sign_in(self, key):
        self.b.type("credential", key)
        self.b.click("signin-submit")
        self.b.wait_visible("session")

    def sign_out(self):
        self.b.click("signout")
        self.b.wait_visible("signin")

    def nav(self, which):
        self.b.click_css(f'[data-nav="{which}"]')

    def t_served(self):
        for path, ctype in (("/ui/", "text/html"), ("/ui/app.js", "javascript"), ("/ui/api.js", "javascript"),
                            ("/ui/app.css", "text/css"), ("/ui/favicon.svg", "image/svg+xml")):
            try:
                r = urllib.request.urlopen(self.origin + path, timeout=10)
            except urllib.error.HTTPError as e:
                raise AssertionError(f"GET {path} answered {e.code}: does this binary serve the console at /ui/?") from None
            with r:
                assert r.status == 200, path
                assert ctype in r.headers.get("Content-Type", ""), (path, r.headers.get("Content-Type"))
                csp = r.headers.get("Content-Security-Policy", "")
                if path == "/ui/":
                    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, "CSP missing: " + csp
        t = time.time()
        self.api.seed("bulk/", BULK)
        print(f"     seeded {BULK} keys under bulk/ in {time.time() - t:.1f}s")

    def t_signin_page(self):
        self.open_console()
        text = self.b.page_text()
        assert "strongroom serve" in text and "bootstrap" in text and "sr_" in text, "no help on where the key comes from"
        assert self.b.d.switch_to.active_element == self.b.el("credential"), "the key field has no focus"
        assert self.b.d.execute_script("return document.compatMode") == "CSS1Compat", "the page renders in quirks mode"
        self.b.axe("sign-in")
        self.b.shot("01-sign-in")

    def t_bad_key(self):
        self.expect_error(r"^/secrets$", 401, "signing in with an unknown key")
        self.b.type("credential", "sr_0000000000000000_" + "A" * 43)
        self.b.click("signin-submit")
        self.b.wait_text("signin-error", "was not accepted")
        self.b.type("credential", "not a key")
        self.b.click("signin-submit")
        self.b.wait_text("signin-error", "neither a strongroom API key")

    def t_sign_in(self):
        self.sign_in(self.key)
        self.b.wait(lambda: self.b.h1() == "All secrets", "the folder view")
        assert self.b.el("credential").get_attribute("value") == "", "the key stays in the sign-in field"
        self.b.wait(lambda: self.b.d.find_elements(By.LINK_TEXT, "bulk/"), "the bulk/ folder")

    def t_create(self):
        self.b.click("new-secret")
        self.b.wait(lambda: self.b.h1() == "New secret", "the new-secret form")
        self.b.type("new-key", SECRET)
        self.b.type("new-value", CANARY + "-v1")
        self.b.el("new-exp-ttl").click()
        self.b.type("new-ttl", "30")  # 30 days: the unit defaults to days
        self.b.axe("new secret")
        self.b.click("new-create")
        self.b.wait(lambda: self.b.h1() == "db.password", "the secret's page")
        self.b.wait_text("current-version", "1")
        status, body, _ = self.api.call("GET", "/metadata/" + SECRET)
        assert status == 200, status
        assert json.loads(body).get("expires_at"), "the 30-day expiry was not recorded"
        self.b.wait(lambda: self.b.text("secret-expires") != "Never", "the expiry to show")

    def t_folders(self):
        self.b.click_link("All secrets")
        self.b.wait(lambda: self.b.h1() == "All secrets", "the root folder")
        self.b.click_link("team/")
        self.b.wait(lambda: self.b.h1() == "Secrets in team/", "folder team/")
        self.b.click_link("app/")
        self.b.wait(lambda: self.b.h1() == "Secrets in team/app/", "folder team/app/")
        crumbs = [e.text for e in self.b.d.find_elements(By.CSS_SELECTOR, ".breadcrumb li")]
        assert crumbs == ["All secrets", "team", "app"], crumbs
        self.b.wait(lambda: self.b.d.find_elements(By.LINK_TEXT, "db.password"), "the key in its folder")
        self.b.axe("folder view")
        self.b.shot("02-folder-view")
        self.b.click_link("db.password")
        self.b.wait(lambda: self.b.h1() == "db.password", "the secret's page")
        self.b.wait_text("current-version", "1")

    def t_reveal(self):
        assert CANARY not in self.b.dom_dump(), "the value is in the page before Reveal"
        self.b.axe("secret view")
        self.b.shot("03-secret-view")
        self.b.click("reveal")
        self.b.wait_text("secret-value", CANARY + "-v1")
        assert CANARY not in self.b.d.title and CANARY not in self.b.d.current_url
        self.b.click("copy")
        self.b.wait_page_text("Copied to the clipboard")
        clip = self.b.clipboard()
        assert clip == CANARY + "-v1", "clipboard holds " + repr(clip[:60])
        self.b.click("reveal")  # now "Hide value"
        self.b.wait_visible("value-hidden")
        assert CANARY not in self.b.dom_dump(), "the value stays in the page after Hide"

    def t_edit(self):
        self.b.click("edit")
        self.b.wait_text("edit-base", "version 1")
        self.b.type("edit-value", CANARY + "-v2")
        self.b.axe("edit form")
        self.b.click("edit-save")
        self.b.wait_page_text("Saved version 2")
        self.b.wait_text("current-version", "2")
        assert self.api.get(SECRET)[1] == CANARY + "-v2"

    def conflict(self, mine, theirs, base, now):
        self.b.click("edit")
        self.b.wait_text("edit-base", f"version {base}")
        self.b.type("edit-value", mine)
        assert self.api.put(SECRET, theirs) == now  # the second session writes meanwhile
        self.expect_error(r"^/secrets$", 412, "a save that lost to another session (If-Match)")
        self.b.click("edit-save")
        self.b.wait_text("conflict-text", f"now at version {now}")
        assert self.api.get(SECRET)[1] == theirs, "the conflicting save overwrote"

    def t_conflict_reload(self):
        self.conflict(CANARY + "-mine3", CANARY + "-theirs3", 2, 3)
        self.b.axe("conflict")
        self.b.d.execute_script("document.getElementById('conflict').scrollIntoView({block: 'center'})")
        self.b.shot("04-conflict", full=False)
        self.b.click("conflict-reload")
        self.b.wait_page_text("your change was discarded")
        self.b.wait_text("current-version", "3")
        self.b.click("reveal")
        self.b.wait_text("secret-value", CANARY + "-theirs3")
        self.b.click("reveal")
        self.b.wait_visible("value-hidden")

    def t_conflict_overwrite(self):
        self.conflict(CANARY + "-mine5", CANARY + "-theirs4", 3, 4)
        self.b.click("conflict-show")  # their version, before choosing
        self.b.wait_text("secret-value", CANARY + "-theirs4")
        self.b.click("conflict-overwrite")
        self.b.wait_page_text("Saved version 5")
        status, value, etag = self.api.get(SECRET)
        assert (status, value, etag) == (200, CANARY + "-mine5", '"5"'), (status, value, etag)
        self.b.wait_visible("value-hidden")

    def t_delete_undelete(self):
        self.b.click("delete")
        self.b.wait_text("secret-state", "Deleted")
        assert self.api.get(SECRET)[0] == 404
        self.b.click("undelete")
        self.b.wait_text("secret-state", "Active")
        assert self.api.get(SECRET)[:2] == (200, CANARY + "-mine5")

    def t_destroy(self):
        doomed = f"team/app/tmp-{RUN}"
        self.api.put(doomed, CANARY + "-doomed")
        self.b.click_link("app")  # breadcrumb
        self.b.click_link(f"tmp-{RUN}")
        self.b.wait(lambda: self.b.h1() == f"tmp-{RUN}", "the doomed secret's page")
        self.b.click("destroy")
        self.b.type("destroy-confirm", "team/app/tmp")
        assert not self.b.el("destroy-go").is_enabled(), "destroy allowed without the exact name"
        self.b.axe("destroy confirmation")
        self.b.type("destroy-confirm", doomed)
        self.b.click("destroy-go")
        self.b.wait_page_text("Destroyed " + doomed)
        self.b.wait(lambda: self.b.h1() == "Secrets in team/app/", "back in the folder")
        assert self.api.call("GET", "/metadata/" + doomed)[0] == 404

    def t_apikey_create(self):
        self.nav("apikeys")
        self.b.wait(lambda: self.b.h1() == "API keys", "the API keys page")
        self.b.wait(lambda: "bootstrap" in self.b.text("apikey-list"), "the key list")
        self.b.type("ak-name", f"reader-{RUN}")
        self.b.el("ak-scope-0").click()  # secrets:read
        self.b.el("ak-scope-1").click()  # secrets:list
        self.b.type("ak-days", "7")
        self.b.click("ak-create")
        self.b.wait_text("ak-new-key", "sr_")
        self.reader = self.b.text("ak-new-key").strip()
        self.credentials.append(self.reader)
        assert re.fullmatch(r"sr_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", self.reader), "not a key: " + self.reader[:8]
        self.b.click("ak-new-copy")
        self.b.wait_text("ak-new", "Copied to the clipboard")
        assert self.b.clipboard() == self.reader, "the copied key differs"
        self.b.click("ak-new-done")
        self.b.wait(lambda: not self.b.visible("ak-new"), "the new key to be hidden")
        assert self.reader not in self.b.dom_dump(), "the key text stays in the page after Done"
        row = self.b.d.find_element(By.CSS_SELECTOR, f'tr[data-id="{self.reader[3:19]}"]')
        assert "secrets:read" in row.text and "secrets:list" in row.text and "never" in row.text, row.text
        self.b.axe("API keys")
        self.b.shot("05-api-keys")

    def t_forbidden(self):
        self.sign_out()
        self.expect_error(r"^/apikeys$", 403, "the reader key (no apikeys:admin) signs in on the API keys page")
        self.sign_in(self.reader)  # back on the page it was on: API keys
        self.b.wait_page_text("lacks the apikeys:admin scope")
        self.nav("browse")
        self.b.wait(lambda: self.b.h1() == "All secrets", "the folder view as the reader")
        self.b.click("new-secret")
        self.b.type("new-key", "team/app/forbidden")
        self.b.type("new-value", CANARY + "-forbidden")
        self.expect_error(r"^/secrets$", 403, "a write with a key that holds only secrets:read and secrets:list")
        self.b.click("new-create")
        self.b.wait_page_text("lacks the secrets:write scope for team/app/forbidden")
        self.sign_out()
        self.sign_in(self.key)

    def t_apikey_revoke(self):
        self.nav("apikeys")
        kid = self.reader[3:19]
        self.b.wait(lambda: self.b.d.find_elements(By.CSS_SELECTOR, f'[data-revoke="{kid}"]'), "the reader key's row")
        row = self.b.d.find_element(By.CSS_SELECTOR, f'tr[data-id="{kid}"]')
        assert "never" not in row.find_elements(By.CSS_SELECTOR, "td")[5].text, "last use not shown"
        self.b.click_css(f'[data-revoke="{kid}"]')
        self.b.click("ak-revoke-yes")
        self.b.wait_page_text("Revoked")
        self.b.wait(lambda: not self.b.d.find_elements(By.CSS_SELECTOR, f'tr[data-id="{kid}"]'), "the row to go")
        assert self.api.call("GET", "/secrets?limit=1", key=self.reader)[0] == 401, "the revoked key still works"

    def t_paging(self):
        self.nav("browse")
        self.b.wait(lambda: self.b.h1() == "All secrets", "the root folder")
        self.b.click_link("bulk/")
        self.b.wait_text("browse-count", "Showing 1000 keys; more follow.")
        self.b.click("load-more")
        self.b.wait_text("browse-count", f"Showing {BULK} keys.")
        assert not self.b.visible("load-more")
        assert len(self.b.d.find_elements(By.CSS_SELECTOR, "#secret-list a.secret-link")) == BULK

    def t_live(self):
        self.b.click_link("All secrets")
        self.b.click_link("team/")
        self.b.click_link("app/")
        self.b.wait(lambda: self.b.h1() == "Secrets in team/app/", "folder team/app/")
        status = self.api.status_of_stream("/watch?prefix=team/app/")
        assert status == 200, status
        self.b.wait_text("live-status", "Live updates: on")
        time.sleep(0.3)
        self.api.put(f"team/app/live-{RUN}", CANARY + "-live")
        self.b.wait(lambda: self.b.d.find_elements(By.LINK_TEXT, f"live-{RUN}"), "the new key to appear live", 15)

    def t_audit(self):
        self.nav("audit")
        self.b.wait(lambda: self.b.h1() == "Audit trail", "the audit page")
        self.b.wait_text("audit-count", "Loaded")
        self.b.click("audit-more")  # one page by hand, then the rest
        self.b.click("audit-end")
        self.b.wait(lambda: not self.b.visible("audit-more"), "the end of the audit trail", 20)
        self.b.el("audit-newest").click()
        self.b.type("audit-filter", SECRET)
        text = self.b.text("audit-list")
        for action in ("secrets.write", "secrets.read", "secrets.delete", "secrets.undelete", "secrets.metadata"):
            assert action in text, f"no {action} line for {SECRET}"
        assert "412" in text, "the lost conflict is not in the audit trail"
        self.b.type("audit-filter", "apikeys.")
        text = self.b.text("audit-list")
        for action in ("apikeys.create", "apikeys.revoke", "apikeys.list"):
            assert action in text, f"no {action} line"
        self.b.type("audit-filter", "")
        self.b.axe("audit")
        self.b.shot("06-audit", full=False)
        assert CANARY not in self.b.dom_dump()

    def t_expiring(self):
        # Undelete and the second session's plain PUT have cleared the expiry
        # set at creation (DESIGN §1): set one again through the edit form.
        self.nav("browse")
        self.b.click_link("team/")
        self.b.click_link("app/")
        self.b.click_link("db.password")
        self.b.wait(lambda: self.b.h1() == "db.password", "the secret's page")
        self.b.click("edit")
        self.b.el("edit-exp-ttl").click()
        self.b.type("edit-ttl", "45")  # days
        self.b.type("edit-value", CANARY + "-expiring")
        self.b.click("edit-save")
        self.b.wait_page_text("Saved version")
        self.b.wait(lambda: self.b.text("secret-expires") != "Never", "the expiry to show")
        status, body, _ = self.api.call("GET", "/metadata/" + SECRET)
        assert status == 200 and json.loads(body).get("expires_at"), body
        self.nav("expiring")
        self.b.wait(lambda: self.b.h1() == "Expiring soon", "the expiring page")
        self.b.click_css('#exp-window option[value="30"]')
        self.b.click_css("form.toolbar button[type=submit]")
        self.b.wait_page_text("Nothing expires in that time.")  # 45 days is beyond 30
        self.b.click_css('#exp-window option[value="90"]')
        self.b.click_css("form.toolbar button[type=submit]")
        self.b.wait(lambda: self.b.d.find_elements(By.LINK_TEXT, SECRET), "the secret in the expiring list")
        self.b.axe("expiring")
        self.b.shot("07-expiring")

    def t_narrow(self):
        d = self.b.d
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 360, "height": 780, "deviceScaleFactor": 1, "mobile": True})
        try:
            self.nav("browse")
            self.b.click_link("team/")
            self.b.click_link("app/")
            self.b.wait(lambda: d.find_elements(By.LINK_TEXT, "db.password"), "the key at 360 px")
            width = d.execute_script("return document.documentElement.scrollWidth")
            assert width <= 362, f"the page scrolls sideways at 360 px ({width} px wide)"
            self.b.axe("folder view at 360 px")
            self.b.shot("08-folder-view-360")
            self.b.click_link("db.password")
            self.b.wait_text("current-version", "6")
            width = d.execute_script("return document.documentElement.scrollWidth")
            assert width <= 362, f"the secret page scrolls sideways at 360 px ({width} px wide)"
            self.b.axe("secret view at 360 px")
            self.b.shot("09-secret-view-360")
        finally:
            d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def t_keyboard(self):
        d = self.b.d
        # after a navigation the view's heading has focus, for screen readers and Tab
        self.b.click_link("app")
        self.b.wait(lambda: self.b.h1() == "Secrets in team/app/", "folder team/app/")
        self.b.wait(lambda: d.switch_to.active_element.tag_name == "h1", "focus on the heading")
        # Tab walks to the first control of the view, and the focus ring shows
        d.switch_to.active_element.send_keys(Keys.TAB)
        active = d.switch_to.active_element
        assert active.get_attribute("id") == "new-secret", "Tab after the heading went to " + active.get_attribute("outerHTML")[:80]
        outline = d.execute_script("const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]")
        assert outline[0] != "none" and outline[1] != "0px", f"no visible focus: {outline}"
        # the keyboard alone opens a key: focus its link and press Enter
        link = d.find_element(By.LINK_TEXT, "db.password")
        d.execute_script("arguments[0].focus()", link)
        d.switch_to.active_element.send_keys(Keys.ENTER)
        self.b.wait(lambda: self.b.h1() == "db.password", "Enter to open the key")
        # every control has an accessible name (axe checks too); none is a clickable non-button
        unlabeled = d.execute_script("""
            return [...document.querySelectorAll('input, select, textarea')].filter((e) =>
              e.type !== 'hidden' && !e.labels?.length && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
              .map((e) => e.id || e.outerHTML.slice(0, 60));""")
        assert not unlabeled, unlabeled

    def t_jwt(self):
        if self.server is None:
            return  # a server at CONSOLE_URL: its JWT secret is not ours
        token = hs256_token({"sub": "console-person", "tenant": "default",
                             "scope": "secrets:read secrets:list", "exp": int(time.time()) + 600})
        self.credentials.append(token)
        self.sign_out()
        self.sign_in(token)
        self.b.wait_text("session-label", "Token for console-person (tenant default)")
        self.nav("browse")
        self.b.click_link("team/")
        self.b.click_link("app/")
        self.b.click_link("db.password")
        self.b.wait(lambda: self.b.h1() == "db.password", "the secret's page, signed in with a JWT")
        self.b.wait(lambda: self.b.exists("reveal"), "the reveal button")

    def t_login_token(self):
        if self.server is None:
            return  # a server at CONSOLE_URL: its providers are not ours
        role = {"provider": "ci", "bound_audiences": ["strongroom"], "scopes": ["secrets:read", "secrets:list"],
                "token_ttl_seconds": 600}
        status, body, _ = self.api.call("PUT", "/auth/roles/console", role)
        assert status == 200, (status, body)
        now = int(time.time())
        jwt = rs256_token({"iss": "https://ci.example.test", "aud": "strongroom", "sub": "repo:acme/app",
                           "iat": now, "exp": now + 300})
        status, body, _ = self.api.call("POST", "/auth/login/jwt",
                                        {"tenant": "default", "role": "console", "jwt": jwt})
        assert status == 200, (status, body)
        token = json.loads(body)["token"]
        self.credentials += [jwt, token]
        self.sign_out()
        self.sign_in(token)
        self.b.wait_text("session-label", "a login token")
        self.nav("browse")
        self.b.click_link("team/")
        self.b.click_link("app/")
        self.b.click_link("db.password")
        self.b.wait(lambda: self.b.h1() == "db.password", "the secret's page, signed in with a login token")
        self.b.wait(lambda: self.b.exists("reveal"), "the reveal button")

    def oidc_round_trip(self, consent):
        """From the sign-in page to the provider's forms and back."""
        self.b.type("oidc-tenant", "default")
        self.b.type("oidc-role", "people")
        self.b.click("oidc-submit")
        d = self.b.d
        def at_provider():
            return "/interaction/" in d.current_url
        self.b.wait(at_provider, "the provider's page")
        def form(name):
            return d.find_elements(By.CSS_SELECTOR, f'input[name="prompt"][value="{name}"]')
        self.b.wait(lambda: form("login") or form("consent"), "the provider's login or consent form")
        if form("login"):
            d.find_element(By.CSS_SELECTOR, 'input[name="login"]').send_keys("alice")
            d.find_element(By.CSS_SELECTOR, 'input[name="password"]').send_keys("any")
            d.find_element(By.CSS_SELECTOR, 'form button[type="submit"]').click()
            self.b.wait(lambda: form("consent"), "the provider's consent form")
        if consent:
            d.find_element(By.CSS_SELECTOR, 'form button[type="submit"]').click()
        else:
            d.find_element(By.XPATH, '//a[contains(@href, "/abort")]').click()
        self.b.wait(lambda: d.current_url.startswith(self.origin + "/ui/"), "the console again")

    def t_oidc_cancelled(self):
        if self.server is None:
            return  # a server at CONSOLE_URL: its providers are not ours
        role = {"provider": "corp", "bound_audiences": ["strongroom"], "bound_claims": {"groups": ["ops"]},
                "user_claim": "email", "scopes": ["secrets:read", "secrets:list"],
                "allowed_redirect_uris": [self.origin + "/ui/"], "token_ttl_seconds": 600}
        status, body, _ = self.api.call("PUT", "/auth/roles/people", role)
        assert status == 200, (status, body)
        self.sign_out()
        self.oidc_round_trip(consent=False)
        self.b.wait_text("oidc-error", "cancelled")
        assert "code=" not in self.b.d.current_url and "error=" not in self.b.d.current_url

    def t_oidc(self):
        if self.server is None:
            return
        self.credentials.append("srt_")  # a login token, whatever its text
        self.oidc_round_trip(consent=True)
        self.b.wait_text("session-label", "corp:alice@example.test")
        assert "code=" not in self.b.d.current_url and "state=" not in self.b.d.current_url
        self.nav("browse")
        self.b.click_link("team/")
        self.b.click_link("app/")
        self.b.click_link("db.password")
        self.b.wait(lambda: self.b.h1() == "db.password", "the secret's page, signed in at the provider")
        self.b.wait(lambda: self.b.exists("reveal"), "the reveal button")

    def t_sign_out(self):
        self.b.click("reveal")
        self.b.wait_text("secret-value", CANARY)
        self.sign_out()
        dump = self.b.dom_dump()
        assert CANARY not in dump, "the value stays in the page after sign-out"
        assert not any(c in dump for c in self.credentials), "the key stays in the page after sign-out"
        assert "signed out" in self.b.page_text()

    def t_privacy(self):
        d = self.b.d
        state = d.execute_script("""
            const all = (s) => { const o = {}; for (let i = 0; i < s.length; i++) { const k = s.key(i); o[k] = s.getItem(k); } return o; };
            return {href: location.href, title: document.title, historyLength: history.length,
                    historyState: JSON.stringify(history.state), local: JSON.stringify(all(localStorage)),
                    session: JSON.stringify(all(sessionStorage)), cookie: document.cookie};""")
        self.b.drain_logs()
        urls = []
        for m in self.b.perf:
            p = m.get("params", {})
            if m["method"] == "Network.requestWillBeSent":
                urls.append(p["request"]["url"])
                for k, v in p["request"].get("headers", {}).items():
                    if k.lower() not in ("x-api-key", "authorization"):
                        assert not any(c in v for c in self.credentials), f"a credential in request header {k}"
            elif m["method"] == "Page.frameNavigated":
                urls.append(p["frame"]["url"])
            elif m["method"] == "Page.navigatedWithinDocument":
                urls.append(p["url"])
        assert any("/secrets" in u for u in urls), "the performance log saw no API request"
        for secret_text, what in [(CANARY, "the secret value")] + [(c, "a credential") for c in self.credentials]:
            for k, v in state.items():
                assert secret_text not in str(v), f"{what} in {k}"
            for u in urls:
                assert secret_text not in urllib.parse.unquote(u), f"{what} in a requested URL"
        assert state["local"] == "{}" and state["session"] == "{}" and state["cookie"] == "", state
        print(f"     checked {len(urls)} URLs, history length {state['historyLength']}")

    def t_reload(self):
        self.sign_in(self.key)
        self.b.d.refresh()
        self.b.wait(lambda: self.b.el("signin-fieldset").is_enabled(), "the console after reload")
        assert self.b.visible("signin") and not self.b.visible("view"), "a reload kept the session"
        assert self.b.el("credential").get_attribute("value") == ""

    def t_console_errors(self):
        self.b.drain_logs()
        unexpected, seen = [], []
        for e in self.b.console:
            if e.get("level") != "SEVERE":
                continue
            msg = e.get("message", "")
            # The identity provider's own pages (its development login form
            # asks for a web font this machine cannot resolve, and a
            # favicon): not the console's errors.
            if self.server is not None and (msg.startswith(self.server.idp.issuer)
                                            or msg.startswith("https://fonts.googleapis.com/")):
                seen.append("the identity provider's page: " + msg.split(" - ")[0])
                continue
            m = re.match(r"(\S+) - Failed to load resource: the server responded with a status of (\d+)", msg)
            why = None
            if m:
                path = urllib.parse.urlsplit(m.group(1)).path
                why = next((w for r, s, w in self.expected if r.search(path) and s == int(m.group(2))), None)
            if why:
                seen.append(f"{m.group(2)} {path}: {why}")
            else:
                unexpected.append(msg)
        for s in sorted(set(seen)):
            print("     expected console error:", s, f"(x{seen.count(s)})")
        assert not unexpected, "browser console errors:\n" + "\n".join(unexpected)


if __name__ == "__main__":
    sys.exit(0 if Scenario().run() else 1)


def test_console():
    """For pytest."""
    assert Scenario().run()
