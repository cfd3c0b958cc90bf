"""The operator console (`/ui/`) in a real browser: Debian's `chromium` driven by selenium
through `/usr/bin/chromedriver` (headless; nothing is downloaded, Selenium Manager is never
asked), against `llmrouter all` in memory and against router + worker + mcp-tools + gateway
processes over Redis with a second gateway on the same redis — there the browser signs in on
the first gateway and works on the second, and the `openai` package calls one while the page
watches the other.

Upstreams: the priced mock of test_governance (model `allowed-a`, $0.01 a request) and a
`flaky-up/flaky` target on a second wire_mock that answers 500 while `Flaky.failing` is set,
behind a breaker that opens after 3 failures and lets a probe through after 3 s.

Every page is checked for console errors (SEVERE entries of the browser log) and with
axe-core (no serious or critical violation); the in-memory run saves a 1280×800 screenshot
of each page to docs/console/{page}.png. Every wait is bounded (WAIT seconds at most)."""

import json
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer

import openai
import pytest
from axe_selenium_python import Axe
from selenium import webdriver
from selenium.common.exceptions import (NoAlertPresentException, NoSuchElementException,
                                        StaleElementReferenceException, TimeoutException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

import wire_mock
from conftest import ROOT, TOKEN, Stack, binary, free_port, start_llmrouter, wait_healthy
from test_governance import ADMIN, Gateway, chat, cost_of, eventually, settled
from test_governance import config as governance_config

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGES = ("overview", "providers", "cluster", "keys", "requests", "tools", "config")
WIDTH, HEIGHT = 1280, 800
WAIT = 15  # seconds: the longest any wait in this file lasts
REFRESH = 5  # seconds: how often the live pages poll (the contract's)
SHOTS = os.path.join(ROOT, "docs", "console")
FLAKY = "flaky-up/flaky"
RECOVERY_MS = 3000


# The deployment ------------------------------------------------------------------------------

class Flaky(wire_mock.Handler):
    """wire_mock's answers, or 500 while `failing` is set: an upstream that fails, then recovers."""

    failing = False

    def do_POST(self):
        if not Flaky.failing:
            return super().do_POST()
        self.rfile.read(int(self.headers["content-length"]))
        self.reply(500, json.dumps({"error": {"message": "flaky upstream is down", "type": "server_error"}}))


def start_flaky():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def console_config(priced_port, flaky_port):
    return governance_config(priced_port) + f"""
[[providers]]
name = "flaky-up"
type = "openai"
base_url = "http://127.0.0.1:{flaky_port}/v1"
models = ["flaky"]

[health]
failure_threshold = 3
failure_window_ms = 60000
recovery_ms = {RECOVERY_MS}
"""


class Deployment:
    """A running llmrouter: `gateways` (test_governance.Gateway; two over Redis, one in memory)."""

    def __init__(self, mode, gateways):
        self.mode = mode
        self.gateways = gateways
        self.first, self.last = gateways[0], gateways[-1]


@pytest.fixture(scope="module", params=["all-in-memory", "cluster-over-redis"])
def deployment(request):
    priced, flaky = wire_mock.start(), start_flaky()
    tmp = tempfile.mkdtemp(prefix="llmr-console-")
    path = os.path.join(tmp, "config.toml")
    with open(path, "w") as f:
        f.write(console_config(priced.server_port, flaky.server_port))
    stack = Stack()
    ports = [free_port()]
    env = dict(os.environ, LLMR__SERVER__PORT=str(ports[0]), LLMR__SERVER__TOKEN=TOKEN,
               LLMR__SERVER__ADMIN_TOKEN=ADMIN, RUST_LOG="warn", LLMR__SERVER__REQUEST_TIMEOUT_MS="30000")
    gateways = []
    try:
        roles = ("router", "worker", "mcp-tools", "gateway")
        start_llmrouter(stack, request.param, ports[0], env, roles=roles, config=path)
        if request.param == "cluster-over-redis":
            # A second gateway on the same redis (env carries LLMR__REDIS__URL now).
            ports.append(free_port())
            second = stack.spawn([binary(), "--config", path, "gateway"], dict(env, LLMR__SERVER__PORT=str(ports[1])))
            wait_healthy(ports[1], {"gateway", "router", "worker", "mcp-tools"}, [second])
        gateways = [Gateway(f"http://127.0.0.1:{p}") for p in ports]
        yield Deployment(request.param, gateways)
    finally:
        for g in gateways:
            g.admin_http.close()
        stack.stop()
        priced.shutdown()
        flaky.shutdown()
        Flaky.failing = False
        shutil.rmtree(tmp, ignore_errors=True)


# The browser ---------------------------------------------------------------------------------

def require_chromium():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        where = "CI: .ci/run installs them" if os.environ.get("CI") else "install them: apt-get install chromium chromium-driver"
        pytest.fail(f"{' and '.join(missing)} missing: the console tests need Debian's chromium and chromium-driver ({where})")


@pytest.fixture(scope="module")
def browser(deployment):
    """Headless chromium with a 1280×800 viewport and its console log kept; one per deployment."""
    require_chromium()
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: the driver's path is given, so it is not looked up
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        # The window's frame eats some of --window-size: make the page itself 1280×800.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        driver.quit()
        if service.process is not None and service.process.poll() is None:
            service.process.kill()
            service.process.wait(timeout=10)


def until(driver, condition, what, timeout=WAIT):
    """Waits (at most `timeout` s) for `condition(driver)` to be truthy and returns it; else fails
    saying what was awaited, where, the page's status line and the browser's log."""
    wait = WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException, NoSuchElementException))
    try:
        return wait.until(condition)
    except TimeoutException:
        status = driver.execute_script("const s = document.getElementById('status'); return s ? s.textContent : null")
        raise AssertionError(f"{what}: not within {timeout} s at {driver.current_url} "
                             f"(status line {status!r}; browser log {log_lines(driver)})") from None


def log_lines(driver):
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("WARNING", "SEVERE")]


def severe(driver, allowed=()):
    """The browser log's SEVERE entries since the last call, but those naming an `allowed` URL."""
    return [e for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def try_sign_in(driver, gateway, token):
    """Opens the console with no session and submits `token` in the sign-in form."""
    driver.get(f"{gateway.root}/ui/")
    driver.delete_all_cookies()
    driver.get("about:blank")
    driver.get(f"{gateway.root}/ui/")
    visible(driver, "#login-form")
    field = driver.find_element(By.ID, "login-token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "login-submit").click()


def sign_in(driver, gateway):
    try_sign_in(driver, gateway, ADMIN)
    visible(driver, "#logout")
    visible(driver, 'a[data-page="overview"]')


def loaded(driver, page):
    """Waits until `#page-{page}` is shown with its first data rendered; returns the root."""
    root = visible(driver, f"#page-{page}")
    until(driver, lambda d: root.get_attribute("data-loaded") == "1", f'#page-{page} data-loaded="1"')
    return root


def show(driver, gateway, page):
    """Loads the console afresh on `page` (a new document, so `data-loaded` is this load's)."""
    driver.get("about:blank")
    driver.get(f"{gateway.root}/ui/#/{page}")
    return loaded(driver, page)


def visible(driver, css, timeout=WAIT):
    return until(driver, EC.visibility_of_element_located((By.CSS_SELECTOR, css)), f"{css} visible", timeout)


def number(text):
    """The first number in a figure's text (`1,204`, `0.07/s`, `$0.01`); None for `—`."""
    m = re.search(r"\d[\d,]*(\.\d+)?", text or "")
    return float(m.group(0).replace(",", "")) if m else None


def metric(driver, name):
    return number(driver.find_element(By.CSS_SELECTOR, f'[data-metric="{name}"] .value').text)


def no_alert(driver):
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return True
    driver.switch_to.alert.dismiss()
    raise AssertionError(f"an alert ran: {text!r}")


def admin_fetch(driver, method, path, body, csrf=None):
    """fetch() from the page's own JS (its cookie goes along): {status, body}."""
    return driver.execute_async_script("""
        const [method, path, body, csrf, done] = arguments;
        const headers = {'content-type': 'application/json'};
        if (csrf) headers['x-csrf-token'] = csrf;
        const init = {method, headers, credentials: 'same-origin'};
        if (body !== null) init.body = JSON.stringify(body);
        fetch(path, init)
          .then(r => r.text().then(t => done({status: r.status, body: t})))
          .catch(e => done({status: 0, body: String(e)}));
    """, method, path, body, csrf)


def png_size(path):
    with open(path, "rb") as f:
        return struct.unpack(">II", f.read(24)[16:24])


# Sign-in and session ------------------------------------------------------------------------

def test_a_wrong_token_is_refused(deployment, browser):
    try_sign_in(browser, deployment.first, "not-the-admin-token")
    error = visible(browser, "#login-error")
    until(browser, lambda d: error.text.strip(), "#login-error says why")
    assert not browser.find_element(By.ID, "logout").is_displayed()
    assert not any(c["name"] == "llmr_console" for c in browser.get_cookies()), browser.get_cookies()
    # The refused POST /ui/login is logged by chromium as a failed load; nothing else may be.
    assert severe(browser, allowed=("/ui/login",)) == []


def test_sign_in_sets_an_http_only_strict_cookie_and_changes_need_the_csrf_header(deployment, browser):
    sign_in(browser, deployment.first)
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert "llmr_console" in cookies, cookies
    cookie = cookies["llmr_console"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict", cookie
    assert "llmr_console" not in browser.execute_script("return document.cookie")
    # The token is in no URL, storage or markup, and the sign-in field is emptied.
    seen = browser.execute_script("""return JSON.stringify([location.href, document.documentElement.outerHTML,
        Object.entries(localStorage), Object.entries(sessionStorage), document.getElementById('login-token').value])""")
    assert ADMIN not in seen

    refused = admin_fetch(browser, "POST", "/admin/keys", {"name": "csrf-probe"})
    assert refused["status"] == 403, refused
    assert json.loads(refused["body"])["error"]["code"] == "permission_denied", refused
    assert not [k for k in deployment.first.admin("GET", "/admin/keys")["data"] if k["name"] == "csrf-probe"]
    # The same request with the session's CSRF token goes through (so the 403 was for the header).
    csrf = json.loads(admin_fetch(browser, "GET", "/ui/session", None)["body"])["csrf"]
    made = admin_fetch(browser, "POST", "/admin/keys", {"name": "csrf-probe"}, csrf=csrf)
    assert made["status"] == 201, made
    deployment.first.admin("DELETE", f"/admin/keys/{json.loads(made['body'])['id']}")
    assert severe(browser, allowed=("/admin/keys",)) == []


# Overview -----------------------------------------------------------------------------------

def test_overview_shows_a_request_made_with_the_openai_package(deployment, browser):
    _, secret = deployment.last.key(name="overview-user")
    sign_in(browser, deployment.first)
    show(browser, deployment.first, "overview")
    for name in ("requests_per_s", "error_rate", "p50_ms", "p99_ms", "ttft_ms", "tokens_per_s", "cache_hit_rate"):
        figure = visible(browser, f'[data-metric="{name}"]')
        assert figure.find_elements(By.CSS_SELECTOR, ".value"), name
        assert figure.find_elements(By.TAG_NAME, "svg"), f"{name} has no chart"
    before = metric(browser, "requests_today") or 0
    # Made on the other gateway (over Redis): the overview reads the cluster's request log.
    assert chat(deployment.last.openai(secret), raw=False).choices[0].message.content.endswith("last: hi")
    until(browser, lambda d: (metric(d, "requests_today") or 0) > before,
          f"requests_today above {before} within two refreshes of the request", timeout=2 * REFRESH)
    assert (metric(browser, "requests_today") or 0) >= before + 1
    assert severe(browser) == []


# Providers ----------------------------------------------------------------------------------

def circuit(driver):
    return driver.find_element(By.CSS_SELECTOR, f'tr[data-target="{FLAKY}"] .circuit').text.strip().lower()


def admin_circuit(gateway):
    targets = gateway.admin("GET", "/admin/providers")["targets"]
    return next((t["circuit"] for t in targets if t["target"] == FLAKY), None)


def test_a_failing_upstreams_circuit_shows_open_then_closed_after_recovery(deployment, browser):
    _, secret = deployment.first.key(name="flaky-user")
    client = deployment.first.openai(secret)
    sign_in(browser, deployment.first)
    show(browser, deployment.last, "providers")
    visible(browser, f'tr[data-target="{FLAKY}"] .circuit')
    visible(browser, 'tr[data-provider="flaky-up"]')

    Flaky.failing = True
    try:
        def failed_until_open():
            with pytest.raises(openai.APIStatusError) as e:
                client.chat.completions.create(model="flaky", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
            assert e.value.status_code >= 500, e.value
            return admin_circuit(deployment.first) == "open"
        assert eventually(failed_until_open, timeout=WAIT), deployment.first.admin("GET", "/admin/providers")
        until(browser, lambda d: circuit(d) == "open", f"{FLAKY}'s .circuit shows open")
    finally:
        Flaky.failing = False

    # After recovery_ms one probe is let through; its success closes the circuit.
    time.sleep(RECOVERY_MS / 1000)

    def answered():
        try:
            return chat(client, model="flaky", raw=False).choices[0].message.content.endswith("last: hi")
        except openai.APIStatusError:
            return False
    assert eventually(answered, timeout=WAIT), "the recovered upstream is never tried again"
    until(browser, lambda d: circuit(d) == "closed", f"{FLAKY}'s .circuit shows closed")
    assert admin_circuit(deployment.first) == "closed"
    assert severe(browser) == []


def test_the_routing_plan_a_model_would_get(deployment, browser):
    sign_in(browser, deployment.first)
    show(browser, deployment.first, "providers")
    field = browser.find_element(By.ID, "plan-model")
    field.clear()
    field.send_keys("allowed-a")
    browser.find_element(By.CSS_SELECTOR, "#plan-form [type=submit]").click()
    until(browser, lambda d: "priced-up/allowed-a" in d.find_element(By.ID, "plan-result").text,
          "#plan-result names priced-up/allowed-a")
    assert severe(browser) == []


# Keys and requests --------------------------------------------------------------------------

def find_key_row(driver, name):
    for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-key-id]"):
        if any(cell.text == name for cell in row.find_elements(By.CSS_SELECTOR, ".key-name")):
            return row
    return None


def key_row(driver, name):
    """The keys table's row of the key named `name` (waits for it)."""
    return until(driver, lambda d: find_key_row(d, name), f"a row tr[data-key-id] whose .key-name is {name!r}")


def create_key_in_the_form(driver, name):
    for field, value in (("key-name", name), ("key-models", "allowed*"), ("key-budget", "5")):
        driver.find_element(By.ID, field).clear()
        driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.ID, "key-create").click()
    secret = visible(driver, "#key-secret")
    until(driver, lambda d: secret.text.strip().startswith("sk-llmr-"), "#key-secret shows sk-llmr-…")
    assert driver.find_element(By.ID, "key-copy").is_displayed()
    return secret.text.strip()


def test_a_key_made_in_the_browser_is_used_spent_logged_and_revoked(deployment, browser):
    name = f"browser-key-{deployment.mode}"
    # Signed in on the first gateway, working on the last (the same one in memory).
    sign_in(browser, deployment.first)
    show(browser, deployment.last, "keys")
    secret = create_key_in_the_form(browser, name)
    kid = key_row(browser, name).get_attribute("data-key-id")
    assert kid.startswith("key_"), kid

    # Used on the gateway that made it (another gateway learns of a new key within 250 ms).
    client = deployment.last.openai(secret)
    assert cost_of(chat(client)) == pytest.approx(0.01)
    assert settled(deployment.first, kid)["spend_usd"] == pytest.approx(0.01)
    show(browser, deployment.last, "keys")
    until(browser, lambda d: "0.01" in find_key_row(d, name).find_element(By.CSS_SELECTOR, ".key-spend").text,
          "the key's .key-spend shows 0.01")

    show(browser, deployment.last, "requests")
    browser.find_element(By.ID, "filter-key").send_keys(kid)
    browser.find_element(By.CSS_SELECTOR, "#requests-form [type=submit]").click()
    until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr[data-request-id]")) == 1,
          f"one tr[data-request-id] for key={kid}")
    row = browser.find_element(By.CSS_SELECTOR, "tr[data-request-id]")
    assert "allowed-a" in row.text and "200" in row.text, row.text
    row.click()
    detail = visible(browser, "#request-detail")
    until(browser, lambda d: kid in detail.text and "allowed-a" in detail.text, "#request-detail shows the record")

    show(browser, deployment.last, "keys")
    key_row(browser, name).find_element(By.CSS_SELECTOR, ".key-revoke").click()
    no_alert(browser)  # the in-page dialog, not window.confirm
    visible(browser, "#confirm-dialog")
    browser.find_element(By.ID, "confirm-yes").click()
    assert eventually(lambda: deployment.first.admin("GET", f"/admin/keys/{kid}")["revoked"], timeout=WAIT)
    with pytest.raises(openai.AuthenticationError) as e:
        chat(client, raw=False)
    assert e.value.status_code == 401
    assert severe(browser) == []


def test_a_key_named_like_markup_shows_as_text_and_runs_nothing(deployment, browser):
    name = "<img src=x onerror=alert(1)>"
    kid, _ = deployment.first.key(name=name)
    sign_in(browser, deployment.first)
    show(browser, deployment.last, "keys")
    row = key_row(browser, name)
    assert row.get_attribute("data-key-id") == kid
    cell = row.find_element(By.CSS_SELECTOR, ".key-name")
    assert cell.is_displayed() and cell.text == name
    assert row.find_elements(By.TAG_NAME, "img") == []
    time.sleep(0.5)  # an injected handler would have run by now
    no_alert(browser)
    # An inline handler would also be refused by the CSP, which chromium logs as an error.
    assert severe(browser) == []


# Every page ---------------------------------------------------------------------------------

def page_content(driver, deployment, page):
    """Waits for what each page must show in these deployments."""
    want = {
        "overview": '[data-metric="requests_today"] .value',
        "providers": 'tr[data-provider="priced-up"]',
        "cluster": "tr[data-instance]",
        "keys": "tr[data-key-id]",
        "requests": "tr[data-request-id]",
        "tools": 'tr[data-tool="calculator"]',
        "config": "#config-json",
    }[page]
    visible(driver, want)
    if page == "providers":
        visible(driver, 'tr[data-target="priced-up/allowed-a"]')
    if page == "cluster":
        gateways = [r for r in driver.find_elements(By.CSS_SELECTOR, "tr[data-instance]") if "gateway" in r.text]
        assert len(gateways) == len(deployment.gateways), [r.text for r in gateways]
        visible(driver, "tr[data-stream]")
    if page == "config":
        text = until(driver, lambda d: d.find_element(By.ID, "config-json").text.strip(), "#config-json filled")
        assert "[redacted]" in text and ADMIN not in text and TOKEN not in text


def check_page(driver, deployment, page):
    """Opens `page` from the nav and checks it; returns what is wrong with it (empty when nothing)."""
    driver.find_element(By.CSS_SELECTOR, f'a[data-page="{page}"]').click()
    try:
        loaded(driver, page)
        page_content(driver, deployment, page)
    except AssertionError as e:
        return [f"{page}: {e}"]
    problems = []
    if deployment.mode == "all-in-memory":
        shot = os.path.join(SHOTS, f"{page}.png")
        assert driver.save_screenshot(shot)
        if png_size(shot) != (WIDTH, HEIGHT):
            problems.append(f"{page}: screenshot is {png_size(shot)}")
    axe = Axe(driver)
    axe.inject()
    bad = [v for v in axe.run()["violations"] if v["impact"] in ("serious", "critical")]
    if bad:
        problems.append(f"{page}: {axe.report(bad)}")
    errors = severe(driver)
    if errors:
        problems.append(f"{page}: console errors {[e['message'] for e in errors]}")
    return problems


def test_every_page_has_no_console_error_nor_serious_accessibility_violation(deployment, browser):
    # Something on every page, whichever tests ran before: a key with a budget, and its requests.
    kid, secret = deployment.first.key(name="ci-dashboard", models=["allowed*"], budget_usd=5, budget_period="month", rpm=60)
    for model in ("allowed-a", "allowed-b"):
        chat(deployment.first.openai(secret), model=model)
    settled(deployment.first, kid)
    sign_in(browser, deployment.first)
    show(browser, deployment.first, "overview")
    severe(browser)  # what came before the pages
    os.makedirs(SHOTS, exist_ok=True)
    problems = [p for page in PAGES for p in check_page(browser, deployment, page)]
    assert not problems, "\n".join(problems)
