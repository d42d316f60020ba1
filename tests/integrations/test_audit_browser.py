"""The audit trail in headless Chromium at 1366x768: staff queue contacts in the
admin, the index's Recent actions show that one action, and a contact queued on
its own has the entry on its History page.

Screenshots go to test-artifacts/browser/audit-*.png.
"""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from contacts.models import Contact

from .test_browser import PASSWORD, browser, snap, wait_for  # noqa: F401 (browser is a fixture)

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1366, 768


def log_in(driver, base_url):
    User.objects.create_superuser("audit-admin", "audit@example.com", PASSWORD)
    driver.get(base_url + reverse("admin:login"))
    wait_for(driver, "#id_username").send_keys("audit-admin")
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait_for(driver, "#user-tools")


def queue(driver, base_url, emails, crms, step):
    """Tick the rows of `emails` in the contacts list and queue them for `crms`."""
    driver.get(base_url + reverse("admin:contacts_contact_changelist"))
    wait_for(driver, "#result_list")
    for row in driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr"):
        if row.find_element(By.CSS_SELECTOR, "th a").text in emails:
            row.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(driver.find_element(By.NAME, "action")).select_by_value("queue_for_crm")
    driver.find_element(By.CSS_SELECTOR, ".actions button[name=index]").click()
    wait_for(driver, "body.crm-action-confirmation")
    for crm in crms:
        driver.find_element(By.CSS_SELECTOR, "input[name=crms][value=%s]" % crm).click()
    snap(driver, "audit-%s-confirmation" % step)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit][value=Confirm]").click()
    wait_for(driver, ".messagelist .success")


def recent_actions(driver, base_url):
    driver.get(base_url + reverse("admin:index"))
    wait_for(driver, "#recent-actions-module")
    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#recent-actions-module .actionlist li")]


def test_staff_see_their_action_in_recent_actions_and_on_the_contacts_history(browser, live_server, transactional_db):  # noqa: F811
    browser.set_window_size(WIDTH, HEIGHT)
    many = ["team%d@example.com" % i for i in range(3)]
    for email in [*many, "solo@example.com"]:
        Contact.objects.create(email=email, company="Acme")
    log_in(browser, live_server.url)

    queue(browser, live_server.url, many, ["brevo", "hubspot"], "many")
    actions = recent_actions(browser, live_server.url)
    snap(browser, "audit-recent-actions")
    assert "Queued 3 contacts for Brevo, HubSpot" in actions[0]

    queue(browser, live_server.url, ["solo@example.com"], ["mautic"], "one")
    latest = recent_actions(browser, live_server.url)
    assert "Queued 1 contact for Mautic" in latest[0] and latest[1] == actions[0]
    # The entry links to the contact; its History page shows what was done, by whom.
    browser.find_element(By.CSS_SELECTOR, "#recent-actions-module .actionlist li a").click()
    wait_for(browser, "#contact_form")
    browser.find_element(By.CSS_SELECTOR, "a.historylink").click()
    history = wait_for(browser, "#change-history").text
    snap(browser, "audit-contact-history")
    assert "Queued 1 contact for Mautic" in history and "audit-admin" in history
    assert "Brevo" not in history  # the action on the three others is not this contact's
