"""TinyCRM: the smallest whole backend, as docs/adding-a-crm.md builds it.

TinyCRM is made up. Its API takes up to 10 contacts per POST /contacts/batch,
answers {"contacts": [{"email", "id"}]}, refuses a whole batch with 400
{"error": ...} when one contact is bad, and allows 5 requests a second. Everything
else (pacing, 401, 429, 5xx, timeouts, splitting, secrets) is the base class's.
"""

from integrations.backends.base import CRMBackend, Outcome


class TinyCRMBackend(CRMBackend):
    name = "tinycrm"
    verbose_name = "TinyCRM"
    required_settings = ("API_KEY",)
    optional_settings = ("API_BASE_URL", "FIELD_MAP")
    default_api_url = "https://api.tinycrm.test/v1"
    default_requests_per_second = 5
    default_field_map = {"name": "first_name", "company": "company"}

    def configure_session(self, session):
        session.headers["Authorization"] = "Token %s" % self.setting("API_KEY")

    def build_payload(self, contact):
        return {"email": self.checked_email(contact), **self.mapped_values(contact)}

    def contacts_per_request(self):
        return 10

    def send(self, chunk):
        return self.request("POST", "/contacts/batch", json={"contacts": [item.payload for item in chunk]})

    def parse_outcomes(self, chunk, response):
        ids = {person["email"]: person["id"] for person in response.json()["contacts"]}
        return [
            Outcome.accepted(item, ids[item.payload["email"]], http_status=response.status_code)
            if item.payload["email"] in ids
            else Outcome.retry(item, "TinyCRM answered without this contact.")
            for item in chunk
        ]

    def split_rejected(self, response):
        return True  # one bad contact refuses the batch: find it by halves

    def error_message(self, response):
        return "TinyCRM refused it: %s" % response.json().get("error", "no reason given")
