"""Staff edit HubSpot's mapping in headless Chromium at 1366x768, against the
sandbox's HubSpot: a field HubSpot does not have is refused, a contact's payload
is previewed before saving, and saving queues the changed contacts again at once.

Screenshots go to test-artifacts/browser/mapping-*.png.
"""

import json

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from integrations.backends.hubspot import HubSpotBackend
from integrations.engine import payload_hash
from integrations.models import FieldMapping

from .test_browser import PASSWORD, browser, snap, wait_for  # noqa: F401 (browser is a fixture)

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1366, 768


def complete_in_hubspot():
    """Three contacts HubSpot has, as the environment's field map sent them."""
    for email, company in (("ada@example.com", "Engines"), ("bob@example.com", "Looms"), ("cy@example.com", "")):
        contact = Contact.objects.create(email=email, first_name=email.split("@")[0].title(), company=company)
        ContactSync.objects.update_or_create(
            contact=contact,
            crm="hubspot",
            defaults={
                "sync_status": SyncStatus.COMPLETE,
                "processing_status": ProcessingStatus.COMPLETE,
                "synced_hash": payload_hash(HubSpotBackend().build_payload(contact)),
            },
        )


def log_in(driver, base_url):
    User.objects.create_superuser("mapping-admin", "mapper@example.com", PASSWORD)
    driver.get(base_url + reverse("admin:login"))
    wait_for(driver, "#id_username").send_keys("mapping-admin")
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait_for(driver, "#user-tools")


def open_hubspot_mapping(driver, base_url):
    """From the admin index, as staff would: Field mappings, then HubSpot."""
    driver.get(base_url + reverse("admin:index"))
    wait_for(driver, "a[href='%s']" % reverse("admin:integrations_fieldmapping_changelist")).click()
    wait_for(driver, "#crm-mappings")
    snap(driver, "mapping-01-crm-list")
    wait_for(driver, "a[href='%s']" % reverse("admin:integrations_fieldmapping_crm", args=["hubspot"])).click()
    wait_for(driver, "#mapping-rows")


def row_of(driver, target):
    for row in driver.find_elements(By.CSS_SELECTOR, "tr.mapping-row"):
        if row.find_element(By.CSS_SELECTOR, "input[name$=-target]").get_attribute("value") == target:
            return row
    raise AssertionError("no row maps %s" % target)


def fill_blank_row(driver, target, kind, source):
    row = row_of(driver, "")
    row.find_element(By.CSS_SELECTOR, "input[name$=-target]").send_keys(target)
    Select(row.find_element(By.CSS_SELECTOR, "select[name$=-source_kind]")).select_by_value(kind)
    row.find_element(By.CSS_SELECTOR, "input[name$=-source]").send_keys(source)


def preview(driver, contact):
    field = driver.find_element(By.ID, "id_contact")
    field.clear()
    field.send_keys(contact)
    driver.find_element(By.CSS_SELECTOR, "input[name=_preview]").click()
    return json.loads(wait_for(driver, "#mapping-preview pre").text)


def test_staff_edit_a_hubspot_mapping_preview_a_payload_and_save_it(browser, live_server, transactional_db, sandbox):  # noqa: F811
    browser.set_window_size(WIDTH, HEIGHT)
    complete_in_hubspot()
    log_in(browser, live_server.url)
    open_hubspot_mapping(browser, live_server.url)
    assert (
        "receives HubSpot's default field map from the environment"
        in browser.find_element(By.ID, "mapping-source").text
    )
    snap(browser, "mapping-02-from-the-environment")

    Select(row_of(browser, "company").find_element(By.CSS_SELECTOR, "select[name$=-transform]")).select_by_value(
        "upper"
    )
    fill_blank_row(browser, "favourite_colour", "constant", "blue")
    browser.find_element(By.CSS_SELECTOR, "input[name=_save]").click()
    error = wait_for(browser, ".errorlist").text
    assert error == "HubSpot has no contact field 'favourite_colour'."
    snap(browser, "mapping-03-refused")
    assert not FieldMapping.objects.exists()

    row_of(browser, "favourite_colour").find_element(By.CSS_SELECTOR, "input[name$=-DELETE]").click()
    fill_blank_row(browser, "lifecyclestage", "constant", "lead")
    payload = preview(browser, "ada@example.com")
    assert payload["properties"] == {
        "email": "ada@example.com",
        "firstname": "Ada",
        "company": "ENGINES",
        "lifecyclestage": "lead",
    }
    browser.find_element(By.ID, "mapping-preview").location_once_scrolled_into_view  # noqa: B018 (scrolls)
    snap(browser, "mapping-04-preview")
    assert not FieldMapping.objects.exists(), "a preview saves nothing"

    browser.find_element(By.CSS_SELECTOR, "input[name=_save]").click()
    message = wait_for(browser, ".messagelist .success").text
    snap(browser, "mapping-05-saved")
    assert message == "The HubSpot mapping was saved; 3 contacts queued again, whose payload it changes."
    assert "This mapping overrides HubSpot's default field map" in browser.find_element(By.ID, "mapping-source").text
    assert set(FieldMapping.objects.values_list("target", flat=True)) == {
        "firstname",
        "lastname",
        "phone",
        "company",
        "website",
        "lifecyclestage",
    }
    queued = ContactSync.objects.filter(crm="hubspot", processing_status=ProcessingStatus.QUEUED)
    assert queued.count() == 3

    browser.get(live_server.url + reverse("admin:contacts_contactsync_changelist") + "?q=example.com")
    wait_for(browser, "#result_list")
    snap(browser, "mapping-06-contact-syncs-queued")
