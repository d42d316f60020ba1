"""What the browser tests share: headless Chromium at the laptop size the issue
names (1366x768), screenshots under test-artifacts/browser/, logging in, and
measuring a changelist's layout.

The Chromium lookup and the skip-or-fail rule are tests/integrations/test_browser.py's,
imported rather than copied."""

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.integrations.test_browser import CHROMEDRIVER, CHROMIUM, in_ci, missing_browser, wait_for

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
WIDTH, HEIGHT = 1366, 768
PASSWORD = "browser-support-password"


def laptop_browser():
    """Headless Chromium whose page area is WIDTH x HEIGHT; skipped without Chromium,
    failed instead under CI."""
    problem = missing_browser()
    if problem and in_ci():
        pytest.fail(problem, pytrace=False)
    if problem:
        pytest.skip(problem)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    size = "--window-size=%d,%d" % (WIDTH, HEIGHT)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", size, "--hide-scrollbars"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def snap(driver, name):
    driver.save_screenshot(str(ARTIFACTS / ("%s.png" % name)))


def log_in_as_superuser(driver, base_url, username="layout-admin"):
    User.objects.create_superuser(username, "%s@example.com" % username, PASSWORD)
    driver.get(base_url + reverse("admin:login"))
    wait_for(driver, "#id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    wait_for(driver, "#user-tools")


# One script reads every measurement, so the numbers come from one layout.
LAYOUT_SCRIPT = """
const root = document.documentElement;
const results = document.querySelector('#changelist .results');
const cell = document.querySelector('#result_list tbody td, #result_list tbody th');
const style = cell ? getComputedStyle(cell) : null;
const clipped = [...document.querySelectorAll('#result_list thead th')]
  .filter(th => th.scrollWidth > th.clientWidth + 1 || th.getBoundingClientRect().right > root.clientWidth + 1)
  .map(th => th.textContent.trim() || th.className);
return {
  pageScrollWidth: root.scrollWidth, pageClientWidth: root.clientWidth,
  resultsScrollWidth: results ? results.scrollWidth : 0, resultsClientWidth: results ? results.clientWidth : 0,
  lineHeight: style ? parseFloat(style.lineHeight) : 0,
  verticalPadding: style ? parseFloat(style.paddingTop) + parseFloat(style.paddingBottom) : 0,
  clippedHeaders: clipped,
};
"""


def changelist_layout(driver):
    """The measurements of the changelist on screen, with each row's height from
    Selenium's element.size."""
    layout = driver.execute_script(LAYOUT_SCRIPT)
    rows = driver.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    layout["rowHeights"] = [row.size["height"] for row in rows]
    return layout
