"""The sync dashboard keeps itself current in headless Chromium at 1366x768: rows
change in the database and the open page shows it without a reload; while the tab
is hidden it asks the server nothing, and catches up when shown again. Pause goes
through its confirmation page; resume does not.

Screenshots go to test-artifacts/browser/live-dashboard-*.png.
"""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from contacts.models import AttemptOutcome, Contact, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations import dashboard
from integrations.models import CRMState

from .test_browser import PASSWORD, WAIT_SECONDS, browser, snap, wait_for  # noqa: F401 (browser is a fixture)

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1366, 768
CARD = "#crm-scripted"
# Set on window once the page is open: a reload would drop it.
MARKER = "window.crmsyncNoReloadMarker"

# Counts the page's requests for numbers, and lets the test hide and show the tab
# (headless Chromium's tab is always visible otherwise).
SPY = """
window.numberRequests = 0;
const realFetch = window.fetch;
window.fetch = function () { window.numberRequests += 1; return realFetch.apply(this, arguments); };
window.setTabHidden = function (hidden) {
  Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
  document.dispatchEvent(new Event("visibilitychange"));
};
"""


@pytest.fixture
def fast_refresh(monkeypatch):
    """The page asks every second, so the test waits little."""
    monkeypatch.setattr(dashboard, "REFRESH_SECONDS", 1)


def log_in(driver, base_url):
    User.objects.create_superuser("live-admin", "live@example.com", PASSWORD)
    driver.get(base_url + reverse("admin:login"))
    wait_for(driver, "#id_username").send_keys("live-admin")
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait_for(driver, "#user-tools")


def shown(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, "%s %s" % (CARD, selector)).text


def wait_until_shown(driver, selector, text):
    WebDriverWait(driver, WAIT_SECONDS).until(lambda d: shown(d, selector) == text)


def pause(driver, seconds):
    """Let the page run for `seconds` (its timers keep going; the test only waits)."""
    driver.execute_async_script("setTimeout(arguments[arguments.length - 1], %d);" % (seconds * 1000))


def queue(contacts):
    ContactSync.objects.bulk_create(
        ContactSync(
            contact=contact,
            crm="scripted",
            sync_status=SyncStatus.SELECTED,
            processing_status=ProcessingStatus.QUEUED,
            next_attempt_at=timezone.now(),
        )
        for contact in contacts
    )


def complete(contacts):
    ContactSync.objects.filter(contact__in=contacts, crm="scripted").update(
        sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE, next_attempt_at=None
    )
    SyncAttempt.objects.bulk_create(
        SyncAttempt(contact=contact, crm="scripted", attempted_at=timezone.now(), outcome=AttemptOutcome.ACCEPTED)
        for contact in contacts
    )


def test_the_open_dashboard_follows_the_database_without_a_reload(
    browser,  # noqa: F811
    live_server,
    transactional_db,
    scripted_crm,
    fast_refresh,
):
    browser.set_window_size(WIDTH, HEIGHT)
    contacts = Contact.objects.bulk_create(Contact(email="live%d@example.com" % i) for i in range(6))
    log_in(browser, live_server.url)
    browser.get(live_server.url + reverse("admin:crmsync_dashboard"))
    wait_for(browser, CARD)
    browser.execute_script("%s = 'set before the rows changed';" % MARKER)
    browser.execute_script(SPY)
    assert shown(browser, "[data-status=queued] .count") == "0"
    snap(browser, "live-dashboard-01-empty")

    queue(contacts[:5])
    wait_until_shown(browser, "[data-status=queued] .count", "5")
    assert shown(browser, ".queue") == "5 queued, all due now"
    assert shown(browser, "[data-status=new] .count") == "1"
    snap(browser, "live-dashboard-02-queued")

    complete(contacts[:5])
    wait_until_shown(browser, "[data-status=complete] .count", "5")
    assert shown(browser, "[data-status=queued] .count") == "0"
    assert shown(browser, ".synced-count") == "5"
    labels = [label.text for label in browser.find_elements(By.CSS_SELECTOR, CARD + " .scale-label")]
    assert labels == ["6", "3", "0"], "the chart's scale follows the busiest hour"
    assert browser.find_element(By.CSS_SELECTOR, CARD + " .crm-bars rect:last-of-type").get_attribute("height") == "40"
    as_of = browser.find_element(By.CSS_SELECTOR, ".crm-refreshed .refreshed-at")
    assert as_of.get_attribute("datetime") == browser.execute_script(
        "return document.querySelector('.crm-cards').dataset.refreshedAt;"
    ), "the page says when its numbers are from"
    snap(browser, "live-dashboard-03-synced")
    assert browser.execute_script("return %s;" % MARKER) == "set before the rows changed", "the page was reloaded"


def test_a_hidden_tab_asks_nothing_and_catches_up_when_shown(
    browser,  # noqa: F811
    live_server,
    transactional_db,
    scripted_crm,
    fast_refresh,
):
    browser.set_window_size(WIDTH, HEIGHT)
    contacts = Contact.objects.bulk_create(Contact(email="tab%d@example.com" % i) for i in range(3))
    log_in(browser, live_server.url)
    browser.get(live_server.url + reverse("admin:crmsync_dashboard"))
    wait_for(browser, CARD)
    browser.execute_script(SPY)
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: d.execute_script("return window.numberRequests;") > 0)

    browser.execute_script("window.setTabHidden(true);")
    # A request already on its way when the tab hid may still land: let it.
    pause(browser, 1.5)
    asked = browser.execute_script("return window.numberRequests;")
    queue(contacts)
    # Three refresh intervals with the tab hidden: a polling page would have asked.
    pause(browser, 3)
    assert browser.execute_script("return window.numberRequests;") == asked, "a hidden tab asked for numbers"
    assert shown(browser, "[data-status=queued] .count") == "0"

    browser.execute_script("window.setTabHidden(false);")
    wait_until_shown(browser, "[data-status=queued] .count", "3")
    snap(browser, "live-dashboard-04-shown-again")


def test_pause_asks_for_confirmation_first_and_resume_does_not(
    browser,  # noqa: F811
    live_server,
    transactional_db,
    scripted_crm,
):
    browser.set_window_size(WIDTH, HEIGHT)
    log_in(browser, live_server.url)
    browser.get(live_server.url + reverse("admin:crmsync_dashboard"))
    wait_for(browser, CARD + " [data-control=pause]").click()

    wait_for(browser, "body.crm-pause-confirmation")
    snap(browser, "live-dashboard-05-pause-confirmation")
    assert not CRMState.objects.filter(paused_at__isnull=False).exists(), "opening the confirmation paused"
    browser.find_element(By.CSS_SELECTOR, "input[type=submit][value='Yes, pause Scripted CRM']").click()

    assert wait_for(browser, ".messagelist .success").text.startswith("Scripted CRM is paused")
    assert CRMState.objects.get(crm="scripted").paused_by == "live-admin"
    snap(browser, "live-dashboard-06-paused")
    paused_message = browser.find_element(By.CSS_SELECTOR, ".messagelist .success")
    wait_for(browser, CARD + " [data-control=resume] button").click()
    WebDriverWait(browser, WAIT_SECONDS).until(EC.staleness_of(paused_message))
    assert wait_for(browser, ".messagelist .success").text == "Scripted CRM is resumed."
    assert CRMState.objects.get(crm="scripted").paused_at is None
