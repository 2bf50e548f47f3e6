#!/usr/bin/env python3
"""The user at a web browser, for login tests. Python standard library only.

Usage: fake_user.py URL        (so it can stand in as $BROWSER: the `webbrowser` crate runs `$BROWSER URL`)

It opens URL with a private cookie jar and follows redirects one by one. On each HTML page it acts like a person:
  * a form with an input named `login` or `email`: types the email there, anything into `password`, submits;
  * a device-flow page: submits the user code already filled in (from verification_uri_complete) or
    $FAKE_USER_USER_CODE, then confirms it;
  * any other page with a form (a consent page): presses its main button.
It stops at the first redirect (or auto-posting form) that hands an authorization response (`code` or `error`
parameter) to a loopback address (127.0.0.1, localhost, [::1]), or that leaves for a loopback origin other than
the identity provider's. It then requests that URL itself, which delivers the code to the waiting client, prints
the final page's status and text to stderr, and exits 0. A page with nothing left to do (the device flow's
"success" page) also ends the run, with status 0.

Environment:
  FAKE_USER_EMAIL       email typed at the login page (default alice@example.com); oidc-provider makes it the `sub`
  FAKE_USER_PASSWORD    password typed (default "password"; test providers accept anything)
  FAKE_USER_ACTION      approve (default) | deny | ignore
                          deny: logs in, then uses the consent (or device confirmation) page's cancel/abort
                          control (or, on a provider without consent, a cancel button of the login form); the
                          provider then redirects with error=access_denied, and that redirect is delivered to
                          the client like a code would be
                          ignore: does nothing at all (for timeout tests)
  FAKE_USER_USER_CODE   device flow user code, when URL is the bare verification_uri
  FAKE_USER_DELAY       seconds to wait before starting (default 0)
  FAKE_USER_TIMEOUT     seconds per HTTP request (default 10)
  FAKE_USER_LOG         file that every step and the outcome are appended to (else: stderr while attached,
                        nothing once detached)
  FAKE_USER_FOREGROUND  1: stay attached; the exit status is the outcome (0 delivered/finished, 1 failed,
                        2 usage). Otherwise (default) it detaches at once: the first process exits 0 straight
                        away and a daemonized grandchild, with stdin/stdout/stderr on /dev/null (stderr on
                        FAKE_USER_LOG when set), does the work. This works whether or not the caller waits for
                        the browser command to exit (the `webbrowser` crate 1.x spawns $BROWSER and does not wait,
                        except for names of text browsers like lynx or w3m).
"""

import html.parser
import http.cookiejar
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOGIN_FIELDS = ("login", "email")
DENY_WORDS = ("cancel", "abort", "deny", "decline", "reject")
MAX_STEPS = 40
DONE = "done"
DELIVERED = "delivered"


class Failure(Exception):
    """Something a person would have noticed: an error page, nothing to click, a redirect off the machine."""


def log(message):
    sys.stderr.write(f"fake_user: {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------------------------------------------
# HTML


class Form:
    def __init__(self, attrs):
        self.id = attrs.get("id")
        self.action = attrs.get("action") or ""
        self.method = (attrs.get("method") or "get").lower()
        self.inputs = []  # dicts of attributes: name, type, value
        self.buttons = []  # dicts of attributes, plus "text"

    def field_names(self):
        return {i.get("name") for i in self.inputs if i.get("name")}

    def visible_inputs(self):
        return [i for i in self.inputs if (i.get("type") or "text").lower() not in ("hidden", "submit", "button")]

    def __repr__(self):
        return f"<form {self.method} {self.action} fields={sorted(self.field_names())}>"


class Page(html.parser.HTMLParser):
    """Forms (with buttons attached through their `form` attribute too), links and the visible text."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self.links = []  # (href, text)
        self.text_parts = []
        self._form = None
        self._button = None
        self._link = None
        self._skip = 0
        self._owned = []  # (form id, "inputs" or "buttons", attributes) of controls placed outside their form
        self.feed(text)
        self.close()
        by_id = {f.id: f for f in self.forms if f.id}
        for owner, kind, control in self._owned:
            if owner in by_id:
                getattr(by_id[owner], kind).append(control)

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag in ("script", "style", "template", "title"):
            self._skip += 1
        elif tag == "form":
            self._form = Form(a)
            self.forms.append(self._form)
        elif tag == "input":
            kind = (a.get("type") or "text").lower()
            if kind in ("submit", "image"):
                self._add("buttons", dict(a, text=a.get("value", "")))
            else:
                self._add("inputs", a)
        elif tag == "button":
            self._button = dict(a, text="")
            if (a.get("type") or "submit").lower() == "submit":
                self._add("buttons", self._button)
        elif tag == "select":
            self._add("inputs", dict(a, type="select"))
        elif tag == "textarea":
            self._add("inputs", dict(a, type="textarea"))
        elif tag == "a" and "href" in a:
            self._link = [a["href"], ""]
            self.links.append(self._link)

    def _add(self, kind, attrs):
        owner = attrs.get("form")
        if owner:
            self._owned.append((owner, kind, attrs))
        elif self._form is not None:
            getattr(self._form, kind).append(attrs)

    def handle_endtag(self, tag):
        if tag in ("script", "style", "template", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag == "form":
            self._form = None
        elif tag == "button":
            self._button = None
        elif tag == "a":
            self._link = None

    def handle_data(self, data):
        if self._skip:
            return
        if self._button is not None:
            self._button["text"] += data
        if self._link is not None:
            self._link[1] += data
        self.text_parts.append(data)

    def text(self):
        return re.sub(r"\s+", " ", " ".join(self.text_parts)).strip()


def words(control):
    return " ".join(str(control.get(k, "")) for k in ("name", "value", "text", "id", "class")).lower()


def is_deny_control(control):
    return any(w in words(control) for w in DENY_WORDS)


# ------------------------------------------------------------------------------------------------------------------
# HTTP


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Response:
    def __init__(self, url, status, headers, body):
        self.url = url
        self.status = status
        self.headers = headers
        self.body = body

    def text(self):
        charset = self.headers.get_content_charset() or "utf-8"
        return self.body.decode(charset, errors="replace")


class Browser:
    def __init__(self, timeout):
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        # ProxyHandler({}): never send loopback traffic through an http_proxy from the environment.
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar), NoRedirect()
        )

    def request(self, url, data=None):
        body = None if data is None else urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(url, data=body, method="GET" if data is None else "POST")
        req.add_header("User-Agent", "fake_user.py (pachagent tests)")
        req.add_header("Accept", "text/html,application/xhtml+xml,*/*")
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                return Response(url, resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return Response(url, err.code, err.headers, err.read())


def origin(url):
    p = urllib.parse.urlsplit(url)
    return (p.scheme, p.hostname, p.port or (443 if p.scheme == "https" else 80))


def is_loopback(url):
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def response_params(url):
    p = urllib.parse.urlsplit(url)
    params = urllib.parse.parse_qs(p.query)
    params.update(urllib.parse.parse_qs(p.fragment))
    return params


# ------------------------------------------------------------------------------------------------------------------
# The person


class FakeUser:
    def __init__(self, start_url, env):
        self.start_url = start_url
        self.email = env.get("FAKE_USER_EMAIL") or "alice@example.com"
        self.password = env.get("FAKE_USER_PASSWORD") or "password"
        self.action = (env.get("FAKE_USER_ACTION") or "approve").lower()
        self.user_code = env.get("FAKE_USER_USER_CODE") or ""
        self.browser = Browser(float(env.get("FAKE_USER_TIMEOUT") or 10))
        self.idp_origins = set()  # origins that served a page with a form
        self.denied = False
        self.code_submitted = False

    def is_callback(self, url):
        """Whether following `url` hands the outcome to the client rather than to the identity provider."""
        params = response_params(url)
        if "code" in params or "error" in params:
            if not is_loopback(url):
                raise Failure(f"the provider sent the authorization response off this machine: {url}")
            return True
        return bool(self.idp_origins) and is_loopback(url) and origin(url) not in self.idp_origins

    def deliver(self, url, data=None):
        """Requests the client's redirect URI with the authorization response, as the browser would."""
        if self.action == "deny" and "code" in response_params(url) and "error" not in response_params(url):
            raise Failure(f"asked to deny, but the provider offered no way to and issued a code: {url}")
        log(f"delivering to the client: {'POST ' if data else ''}{url}")
        resp = self.browser.request(url, data)
        text = Page(resp.text()).text() if resp.body else ""
        log(f"client answered {resp.status}: {text[:2000]}")

    def run(self):
        if self.action == "ignore":
            log(f"ignoring {self.start_url}")
            return 0
        if self.action not in ("approve", "deny"):
            raise Failure(f"FAKE_USER_ACTION must be approve, deny or ignore, not {self.action!r}")
        url, data = self.start_url, None
        for _ in range(MAX_STEPS):
            log(f"{'POST' if data is not None else 'GET'} {url}")
            resp = self.browser.request(url, data)
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if not location:
                    raise Failure(f"{resp.status} without Location from {url}")
                nxt = urllib.parse.urljoin(url, location)
                if self.is_callback(nxt):
                    self.deliver(nxt)
                    return 0
                # 307/308 would repeat a POST; the providers here only use 302/303 after forms.
                url, data = nxt, (data if resp.status in (307, 308) else None)
                continue
            text = resp.text()
            page = Page(text)
            if resp.status >= 400:
                raise Failure(f"{resp.status} from {url}: {page.text()[:2000]}")
            step = self.act(url, page)
            if step is DONE:
                if self.action == "deny" and not self.denied:
                    raise Failure(f"asked to deny, but no page offered a way to; stopped at {url}: {page.text()[:500]}")
                log(f"finished on {url}: {page.text()[:2000]}")
                return 0
            if step is DELIVERED:
                return 0
            url, data = step
        raise Failure(f"gave up after {MAX_STEPS} pages")

    def act(self, url, page):
        """The next request, (url, form data or None), for this page; or DONE (nothing left to do here), or
        DELIVERED (this page handed the authorization response to the client)."""
        forms = [f for f in page.forms if f.method in ("get", "post")]
        if forms:
            self.idp_origins.add(origin(url))
        if self.denied:
            return DONE  # the page after a refusal (the device flow shows it on the provider)

        # An auto-posting form carrying the authorization response (response_mode=form_post).
        for f in forms:
            target = urllib.parse.urljoin(url, f.action or url)
            names = f.field_names()
            if not f.visible_inputs() and ("code" in names or "error" in names) and origin(target) != origin(url):
                if not is_loopback(target):
                    raise Failure(f"the provider posts the authorization response off this machine: {target}")
                self.deliver(target, self.values(f))
                return DELIVERED

        login = next((f for f in forms if f.field_names() & set(LOGIN_FIELDS)), None)
        if login is not None:
            # A provider without a consent page (pachd-dev's) offers its refusal as a button of the login form.
            # (oidc-provider's login page has only a "[ Cancel ]" link: there the refusal waits for consent.)
            refusal = next((b for b in login.buttons if is_deny_control(b)), None)
            if self.action == "deny" and refusal is not None:
                self.denied = True
                return self.submit(url, login, self.values(login), deny=True, button=refusal)
            data = self.values(login)
            for i in login.inputs:
                name = i.get("name")
                if name in LOGIN_FIELDS:
                    data[name] = self.email
                elif name == "password" or (i.get("type") or "").lower() == "password":
                    data[name] = self.password
            return self.submit(url, login, data, deny=False)

        device_input = next((f for f in forms if any(i.get("name") == "user_code" for i in f.visible_inputs())), None)
        if device_input is not None:
            data = self.values(device_input)
            if not data.get("user_code"):
                if not self.user_code:
                    raise Failure(f"{url} asks for the device's user code: set FAKE_USER_USER_CODE")
                data["user_code"] = self.user_code
            if self.code_submitted:
                raise Failure(f"the provider asks for the user code again: {page.text()[:500]}")
            self.code_submitted = True
            return self.submit(url, device_input, data, deny=False)

        if forms:
            # A confirmation page: consent, the device flow's "is this your code?", or a page that submits itself
            # with JavaScript (oidc-provider's /device?user_code=...). Deny where the page offers a way to.
            form = forms[0]
            if self.action == "deny":
                step = self.refuse(url, page, forms)
                if step is not None:
                    return step
            return self.submit(url, form, self.values(form), deny=False)
        return DONE

    def refuse(self, url, page, forms):
        """The request pressing this page's cancel/abort/deny control, or None when it has none."""
        for f in forms:
            button = next((b for b in f.buttons if is_deny_control(b)), None)
            if button is not None:
                self.denied = True
                return self.submit(url, f, self.values(f), deny=True, button=button)
        links = (h for h, t in page.links if is_deny_control({"text": t}) or h.rstrip("/").endswith("/abort"))
        link = next(links, None)
        if link is None:
            return None
        self.denied = True
        log(f"refusing: following {link}")
        nxt = urllib.parse.urljoin(url, link)
        if self.is_callback(nxt):
            self.deliver(nxt)
            return DELIVERED
        return (nxt, None)

    @staticmethod
    def values(form):
        data = {}
        for i in form.inputs:
            name = i.get("name")
            kind = (i.get("type") or "text").lower()
            if not name or (kind in ("checkbox", "radio") and "checked" not in i):
                continue
            data[name] = i.get("value", "")
        return data

    def submit(self, url, form, data, deny, button=None):
        if button is None:
            button = next((b for b in form.buttons if not is_deny_control(b)), None)
        if button is not None and button.get("name"):
            data[button["name"]] = button.get("value", "")
        target = urllib.parse.urljoin(url, form.action or url)
        log(f"{'refusing' if deny else 'submitting'} {form!r} with {sorted(data)}")
        if form.method == "get":
            split = urllib.parse.urlsplit(target)
            return (urllib.parse.urlunsplit(split._replace(query=urllib.parse.urlencode(data))), None)
        return (target, data)


# ------------------------------------------------------------------------------------------------------------------


def detach(log_path):
    """Double-fork: the caller gets its exit status at once; the grandchild carries on in its own session."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    else:
        os.dup2(devnull, 2)
    os.close(devnull)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: fake_user.py URL\n")
        return 2
    env = os.environ
    log_path = env.get("FAKE_USER_LOG")
    if env.get("FAKE_USER_FOREGROUND") == "1":
        if log_path:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(fd, 2)
            os.close(fd)
    else:
        sys.stdout.flush()
        sys.stderr.flush()
        detach(log_path)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    delay = float(env.get("FAKE_USER_DELAY") or 0)
    if delay > 0:
        time.sleep(delay)
    try:
        rc = FakeUser(argv[1], env).run()
    except Failure as err:
        log(f"FAILED: {err}")
        rc = 1
    except Exception as err:  # a crash must still end up in the log
        log(f"FAILED: {type(err).__name__}: {err}")
        rc = 1
    log(f"exit {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
