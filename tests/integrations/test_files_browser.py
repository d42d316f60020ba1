"""Files in the browser, in headless Chromium at 1366x768: staff import a CSV
(upload, the per-line preview, confirm, the result; a large file through the
background path with its progress page) and export the filtered Contacts list.

Screenshots go to test-artifacts/browser/files-*.png.
"""

import csv
import io

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from selenium.webdriver.common.by import By

from contacts import import_jobs
from contacts.models import Contact, ContactSync, ImportJob, ProcessingStatus, SyncStatus

from .test_browser import PASSWORD, browser, snap, wait_for  # noqa: F401 (browser is a fixture)

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1366, 768
FILE = (
    "email,first_name,company\n"
    "same@example.com,Sam,Acme\n"
    "changed@example.com,Chad,Globex\n"
    "new@example.com,Nora,Acme\n"
    "not-an-email,Bad,\n"
)


def log_in(driver, base_url):
    User.objects.create_superuser("files-admin", "files@example.com", PASSWORD)
    driver.set_window_size(WIDTH, HEIGHT)
    driver.get(base_url + reverse("admin:login"))
    wait_for(driver, "#id_username").send_keys("files-admin")
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait_for(driver, "#user-tools")


def upload(driver, base_url, path, step):
    driver.get(base_url + reverse("admin:contacts_contact_changelist"))
    wait_for(driver, ".crm-import-link").click()
    wait_for(driver, "#import-upload")
    driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(path))
    snap(driver, "files-%s-upload" % step)
    driver.find_element(By.CSS_SELECTOR, "#import-upload input[type=submit]").click()


def test_staff_import_a_file_after_reading_its_preview(browser, live_server, transactional_db, tmp_path):  # noqa: F811
    Contact.objects.create(email="same@example.com", first_name="Sam", company="Acme")
    Contact.objects.create(email="changed@example.com", first_name="Chad", company="Initech")
    path = tmp_path / "people.csv"
    path.write_text(FILE)
    log_in(browser, live_server.url)

    upload(browser, live_server.url, path, "small")

    counts = wait_for(browser, "#import-counts")
    cells = {cell.get_attribute("data-count"): cell.text for cell in counts.find_elements(By.CSS_SELECTOR, "td")}
    assert cells == {"created": "1", "updated": "1", "unchanged": "1", "rejected": "1"}
    assert "not a valid email address" in browser.find_element(By.CSS_SELECTOR, ".import-kind-rejected").text
    assert not Contact.objects.filter(email="new@example.com").exists()
    snap(browser, "files-small-preview")

    browser.find_element(By.ID, "import-confirm").click()

    wait_for(browser, "a.button[href$='/contacts/contact/']")
    assert "Imported" in browser.find_element(By.ID, "content").text
    snap(browser, "files-small-done")
    assert Contact.objects.get(email="changed@example.com").company == "Globex"
    assert Contact.objects.filter(email="new@example.com").exists()


def test_a_large_file_is_checked_and_imported_in_the_background(
    browser,  # noqa: F811
    live_server,
    transactional_db,
    tmp_path,
    monkeypatch,
):
    # Every file counts as large here; the queued tasks are run by the test, as a
    # django-q2 worker would, while the page polls their progress.
    queued = []
    monkeypatch.setattr(import_jobs, "BACKGROUND_ABOVE_BYTES", 10)
    monkeypatch.setattr(import_jobs, "BATCH_SIZE", 10)
    monkeypatch.setattr(import_jobs, "async_task", lambda *args, **kwargs: queued.append(args))
    path = tmp_path / "many.csv"
    path.write_text("email,first_name\n" + "".join("p%03d@example.com,P\n" % i for i in range(50)))
    log_in(browser, live_server.url)

    upload(browser, live_server.url, path, "large")

    wait_for(browser, "#import-progress-bar")
    assert browser.find_element(By.ID, "import-status-label").text == "Checking the file"
    snap(browser, "files-large-checking")
    run_queued(queued)
    assert wait_for(browser, "#import-confirm")  # the page saw the check end and reloaded
    snap(browser, "files-large-preview")
    browser.find_element(By.ID, "import-confirm").click()
    wait_for(browser, "#import-progress-bar")
    snap(browser, "files-large-importing")
    run_queued(queued)

    wait_for(browser, "a.button[href$='/contacts/contact/']")
    assert ImportJob.objects.get().status == ImportJob.Status.DONE
    assert Contact.objects.count() == 50
    snap(browser, "files-large-done")


def run_queued(queued):
    while queued:
        function, job_id = queued.pop()
        getattr(import_jobs, function.rsplit(".", 1)[1])(job_id)


def test_staff_export_the_filtered_list(browser, live_server, transactional_db):  # noqa: F811
    for i in range(3):
        contact = Contact.objects.create(email="acme%d@example.com" % i, company="Acme", first_name="=cmd%d" % i)
        ContactSync.objects.create(
            contact=contact, crm="brevo", sync_status=SyncStatus.COMPLETE, processing_status=ProcessingStatus.COMPLETE
        )
    Contact.objects.create(email="other@example.com", company="Other")
    log_in(browser, live_server.url)
    browser.get(live_server.url + reverse("admin:contacts_contact_changelist") + "?q=acme")
    link = wait_for(browser, ".crm-export-link")
    snap(browser, "files-export-list")
    assert link.get_attribute("href").endswith(reverse("admin:contacts_contact_export") + "?q=acme")

    # What the link downloads, fetched by the page with the staff's session.
    text = browser.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(done);",
        link.get_attribute("href"),
    )

    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(row["email"] for row in rows) == ["acme0@example.com", "acme1@example.com", "acme2@example.com"]
    assert {row["Brevo sync status"] for row in rows} == {"Complete"}
    assert {row["first_name"][:2] for row in rows} == {"'="}
