"""The web console at `/`, driven in Debian's headless chromium through chromedriver.

scripts/test installs `chromium` and `chromium-driver` with apt when they are missing; without
them these tests fail (they never skip). One screenshot per main view goes to
target/e2e-artifacts/.
"""

import json
import shutil
import urllib.error
import urllib.request

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import kiln_e2e as k

ARTIFACTS = k.TARGET_DIR / "e2e-artifacts"


def _find(*names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


@pytest.fixture
def browser():
    chromium = _find("chromium", "chromium-browser")
    driver_bin = _find("chromedriver")
    if not chromium or not driver_bin:
        pytest.fail(
            "chromium and chromedriver are needed (apt-get install -y chromium chromium-driver; scripts/test does it)",
            pytrace=False,
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1440,1700",
              "--force-device-scale-factor=1"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait(driver, cond, what, timeout=20):
    try:
        # The page redraws on its own: an element read mid-redraw is stale, so look again.
        return WebDriverWait(
            driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        ).until(lambda d: cond(d))
    except Exception as exc:
        raise AssertionError("timed out waiting for %s" % what) from exc


def shot(driver, name):
    path = ARTIFACTS / ("console-%s.png" % name)
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, "screenshot %s looks empty" % path


def test_console_lists_functions_shows_environments_charts_log_and_invokes(kiln, lam, deploy, browser):
    name = deploy(k.python_zip(), prefix="console", MemorySize=256)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    for i in range(6):
        k.invoke_json(lam, name, {"name": "call-%d" % i})
    k.invoke(lam, name, {"action": "error", "message": "shown in red"})

    # Functions view: the deployed function with its runtime, memory and alias.
    browser.get(kiln.endpoint + "/")
    row_css = 'tr[data-function="%s"]' % name

    def function_row(d):
        cells = [c.text for c in d.find_element(By.CSS_SELECTOR, row_css).find_elements(By.TAG_NAME, "td")]
        return cells[:3] == [name, "provided.al2023", "256 MB"] and "Active" in cells[4]

    wait(browser, function_row, "the function row (name, runtime, memory, state)")
    wait(browser, lambda d: "live→1" in d.find_element(By.CSS_SELECTOR, row_css).text, "the alias in the row")
    shot(browser, "functions")

    # Function view: environments, charts of the calls just made, the log.
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, row_css).click() or True, "a click on the row")
    wait(browser, lambda d: d.find_element(By.ID, "function-name").text == name, "the function view")
    def env_row(d):
        rows = d.find_elements(By.CSS_SELECTOR, "#environments-body tr[data-state]")
        return rows and rows[0].get_attribute("data-state") in ("idle", "busy") and "256 MB" in rows[0].text

    wait(browser, env_row, "an idle or busy 256 MB environment row")
    def bar_kinds(d):
        classes = [b.get_attribute("class") or "" for b in d.find_elements(By.CSS_SELECTOR, "#chart-invocations rect")]
        return all(any(kind in c for c in classes) for kind in ("cold", "warm", "err"))

    # The charts refresh on their own: wait for the bars rather than judge the first drawing.
    wait(browser, bar_kinds, "cold, warm and error bars")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-latency path.line.warm"), "a warm latency line")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-latency circle.cold"), "a cold latency point")
    wait(browser, lambda d: "START RequestId" in d.find_element(By.ID, "log").text
         and "shown in red" in d.find_element(By.ID, "log").text, "log lines")
    shot(browser, "function")

    # Invoke from the page: the result and the log tail; the followed log gets the new call.
    payload = browser.find_element(By.ID, "invoke-payload")
    payload.clear()
    payload.send_keys(json.dumps({"name": "from-the-browser"}))
    browser.find_element(By.ID, "invoke-button").click()
    wait(browser, lambda d: d.find_element(By.ID, "invoke-status").text == "Succeeded", "the invoke result")
    out = json.loads(browser.find_element(By.ID, "invoke-output").text)
    assert out["hello"] == "from-the-browser"
    assert "REPORT RequestId" in browser.find_element(By.ID, "invoke-log").text
    wait(browser, lambda d: "from-the-browser" in d.find_element(By.ID, "log").text or
         d.find_element(By.ID, "log").text.count("REPORT RequestId") >= 8, "the followed log to show the new call")
    # A bad payload is refused in the page, before any request.
    payload.clear()
    payload.send_keys("{not json")
    browser.find_element(By.ID, "invoke-button").click()
    wait(browser, lambda d: "not valid JSON" in d.find_element(By.ID, "invoke-result").text, "the JSON error")
    payload.clear()
    payload.send_keys(json.dumps({"name": "again"}))
    browser.find_element(By.ID, "invoke-button").click()
    wait(browser, lambda d: "again" in d.find_element(By.ID, "invoke-result").text, "the second invoke")
    browser.execute_script("document.getElementById('invoke-result').scrollIntoView({block: 'center'})")
    shot(browser, "invoke")

    # The console assets come from kiln itself; nothing else is loaded.
    hosts = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).host)")
    assert set(hosts) <= {"127.0.0.1:%d" % kiln.port}, hosts


def test_console_read_only_disables_invoke_and_off_removes_it(kiln_factory, browser):
    ro = kiln_factory("ro", extra_args=["--console", "read-only"])
    lam = k.lambda_client(ro.endpoint)
    name = k.unique_name("ro")
    k.create(lam, name, k.python_zip())
    browser.get(ro.endpoint + "/#/fn/" + name)
    wait(browser, lambda d: d.find_element(By.ID, "function-name").text == name, "the function view")
    assert not browser.find_element(By.ID, "invoke-button").is_enabled()
    assert browser.find_element(By.ID, "mode").text == "read-only"

    off = kiln_factory("off", extra_args=["--console", "off"])
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(off.endpoint + "/", timeout=5)
    assert exc.value.code == 404
    # /metrics and the API stay up.
    assert urllib.request.urlopen(off.endpoint + "/metrics", timeout=5).status == 200


def test_console_unknown_function_and_bad_samples_query(kiln, browser):
    browser.get(kiln.endpoint + "/#/fn/no-such-function")
    wait(browser, lambda d: "Function not found" in d.find_element(By.ID, "app").text, "the not-found message")
    for q in ("seconds=0", "seconds=301", "seconds=abc"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(kiln.endpoint + "/kiln/v1/functions/no-such-function/samples?" + q, timeout=5)
        assert exc.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(kiln.endpoint + "/kiln/v1/functions/no-such-function/samples", timeout=5)
    assert exc.value.code == 404
