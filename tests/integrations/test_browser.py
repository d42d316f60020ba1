"""Staff work through the admin in headless Chromium: log in, filter contacts, queue them
for two CRMs, run a sync against the sandbox and watch the dashboard follow.

Screenshots of every step go to test-artifacts/browser/. Without Chromium the test is
skipped, except under CI, where it fails instead.
"""

import os
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
CRMS = ["brevo", "hubspot"]
PASSWORD = "browser-test-password"
WAIT_SECONDS = 15


def missing_browser():
    """Why the browser cannot start, or None."""
    programs = (("Chromium", CHROMIUM, "CHROMIUM_BINARY"), ("chromedriver", CHROMEDRIVER, "CHROMEDRIVER"))
    for name, path, variable in programs:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return "%s not found at %s: apt-get install chromium chromium-driver, or set %s" % (name, path, variable)
    return None


def in_ci():
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


@pytest.fixture
def browser():
    problem = missing_browser()
    if problem and in_ci():
        # CI installs Chromium (.ci/run); a skip there would hide a broken install.
        pytest.fail(problem, pytrace=False)
    if problem:
        pytest.skip(problem)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox because CI runs as root; a small /dev/shm in containers crashes tabs.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    # After a failure this shows the page the test stopped on.
    driver.save_screenshot(str(ARTIFACTS / "last.png"))
    driver.quit()


def snap(driver, step):
    driver.save_screenshot(str(ARTIFACTS / ("%s.png" % step)))


def wait_for(driver, css):
    return WebDriverWait(driver, WAIT_SECONDS).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def contacts_for_the_test():
    """Five new Acme contacts to queue, one Acme contact synced before, two others."""
    acme = Contact.objects.bulk_create(
        Contact(email="acme%d@example.com" % i, first_name="Ada%d" % i, last_name="Lee", company="Acme")
        for i in range(6)
    )
    Contact.objects.bulk_create(
        Contact(email="other%d@example.com" % i, first_name="Bo%d" % i, company="Other Ltd") for i in range(2)
    )
    done = acme.pop()
    for crm in CRMS:
        ContactSync.objects.create(
            contact=done, crm=crm, sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE
        )
    return sorted(contact.email for contact in acme)


def log_in(driver, base_url):
    User.objects.create_superuser("browser-admin", "admin@example.com", PASSWORD)
    driver.get(base_url + reverse("admin:login"))
    wait_for(driver, "#id_username").send_keys("browser-admin")
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    snap(driver, "01-login")
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait_for(driver, "#user-tools")
    snap(driver, "02-admin-index")


def filter_contacts(driver, base_url):
    """Search for Acme, then keep only contacts still New for every CRM."""
    driver.get(base_url + reverse("admin:contacts_contact_changelist"))
    search = wait_for(driver, "#searchbar")
    search.send_keys("Acme")
    search.submit()
    WebDriverWait(driver, WAIT_SECONDS).until(EC.url_contains("q=Acme"))
    filters = wait_for(driver, "#changelist-filter")
    filters.find_element(By.CSS_SELECTOR, "a[href*='sync_status=new']").click()
    WebDriverWait(driver, WAIT_SECONDS).until(EC.url_contains("sync_status=new"))
    snap(driver, "03-filtered-changelist")
    return [link.text for link in driver.find_elements(By.CSS_SELECTOR, "#result_list tbody th a")]


def queue_shown_contacts(driver, crms):
    for checkbox in driver.find_elements(By.CSS_SELECTOR, "#result_list input.action-select"):
        checkbox.click()
    Select(driver.find_element(By.NAME, "action")).select_by_value("queue_for_crm")
    snap(driver, "04-selected")
    driver.find_element(By.CSS_SELECTOR, ".actions button[name=index]").click()
    count = wait_for(driver, "body.crm-action-confirmation .crm-action-count").text
    for crm in crms:
        driver.find_element(By.CSS_SELECTOR, "input[name=crms][value=%s]" % crm).click()
    snap(driver, "05-confirmation")
    driver.find_element(By.CSS_SELECTOR, "input[type=submit][value=Confirm]").click()
    message = wait_for(driver, ".messagelist .success").text
    snap(driver, "06-queued")
    return count, message


def open_dashboard(driver, base_url):
    """Follow the admin index's link, as staff would."""
    driver.get(base_url + reverse("admin:index"))
    dashboard = reverse("admin:crmsync_dashboard")
    wait_for(driver, "a[href='%s']" % dashboard).click()
    wait_for(driver, "section.crm-card")


def dashboard_counts(driver, status):
    counts = {}
    for crm in CRMS:
        cell = wait_for(driver, "#crm-%s [data-status='%s'] .count" % (crm, status))
        counts[crm] = int(cell.text)
    return counts


def emails_in(sandbox, crm):
    if crm == "brevo":
        return sorted(contact["email"] for contact in sandbox.contacts(crm))
    return sorted(contact["properties"]["email"] for contact in sandbox.contacts(crm))


def test_staff_filter_queue_and_watch_the_dashboard_follow_a_sync(browser, live_server, transactional_db, sandbox):
    to_queue = contacts_for_the_test()
    log_in(browser, live_server.url)

    shown = filter_contacts(browser, live_server.url)
    assert sorted(shown) == to_queue, "the search and the New filter leave the five new Acme contacts"
    count, message = queue_shown_contacts(browser, CRMS)
    assert count == "This applies to 5 contacts."
    assert message == "5 contacts queued for Brevo and HubSpot."

    open_dashboard(browser, live_server.url)
    snap(browser, "07-dashboard-queued")
    assert dashboard_counts(browser, "queued") == {"brevo": 5, "hubspot": 5}
    assert dashboard_counts(browser, "complete") == {"brevo": 1, "hubspot": 1}

    call_command("sync_crm", "--until-empty", stdout=StringIO(), stderr=StringIO())
    browser.refresh()
    snap(browser, "08-dashboard-synced")
    assert dashboard_counts(browser, "queued") == {"brevo": 0, "hubspot": 0}
    assert dashboard_counts(browser, "complete") == {"brevo": 6, "hubspot": 6}, "five synced now, one before"
    for crm in CRMS:
        assert emails_in(sandbox, crm) == to_queue
