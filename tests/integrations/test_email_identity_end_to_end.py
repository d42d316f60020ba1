"""One mailbox, one record per CRM: three spellings of one address, imported and
synced one after the other over real sockets to the sandbox, end as one contact in
crmsync and one record in each CRM, sent in the form each CRM's API takes."""

from io import StringIO

import pytest
import requests
from django.core.management import call_command

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus
from crm_sandbox.brevo import API_KEY as BREVO_KEY
from crm_sandbox.mautic import PASSWORD, USERNAME

pytestmark = pytest.mark.django_db

NFC = "zoe@ex\u00e4mple.com"
NFD = "zoe@exa\u0308mple.com"
PUNYCODE = "zoe@xn--exmple-cua.com"
CRMS = ("brevo", "hubspot", "mautic", "n8n")


def import_and_sync(tmp_path, email, first_name):
    path = tmp_path / "contacts.csv"
    path.write_text("email,first_name\n%s,%s\n" % (email, first_name), encoding="utf-8")
    call_command("import_contacts", str(path), "--select", ",".join(CRMS), stdout=StringIO(), stderr=StringIO())
    call_command("sync_crm", "--until-empty", stdout=StringIO(), stderr=StringIO())


def emails_in(sandbox, crm):
    records = sandbox.contacts(crm)
    if crm == "brevo":
        return [(r["email"], r["attributes"].get("FIRSTNAME"), r["id"]) for r in records]
    if crm == "hubspot":
        return [(r["properties"]["email"], r["properties"].get("firstname"), r["id"]) for r in records]
    return [(r["fields"]["all"]["email"], r["fields"]["all"].get("firstname"), r["id"]) for r in records]


def test_three_spellings_of_one_mailbox_are_one_record_in_every_crm(sandbox, tmp_path):
    call_command("crm_setup", stdout=StringIO())
    for email, first_name in ((NFC, "Zoe"), (NFD, "Zo\u00e9"), (PUNYCODE, "Zoey")):
        import_and_sync(tmp_path, email, first_name)

    contact = Contact.objects.get()
    assert contact.email == NFC and contact.first_name == "Zoey"
    rows = {row.crm: row for row in ContactSync.objects.filter(contact=contact)}
    for crm in ("brevo", "hubspot", "mautic"):
        [(email, first_name, record_id)] = emails_in(sandbox, crm)
        assert (email, first_name) == (PUNYCODE, "Zoey"), crm
        assert (rows[crm].sync_status, rows[crm].processing_status) == (SyncStatus.COMPLETE, ProcessingStatus.COMPLETE)
        assert rows[crm].external_id == str(record_id)
    deliveries = sandbox.contacts("n8n")
    assert [(d["email"], d["contact_id"]) for d in deliveries] == [(NFC, contact.pk)] * 3


@pytest.mark.parametrize(
    "path, body, auth",
    [
        ("/brevo/v3/contacts", {"email": NFC, "updateEnabled": True}, {"headers": {"api-key": BREVO_KEY}}),
        ("/mautic/api/contacts/new", {"email": NFC}, {"auth": (USERNAME, PASSWORD)}),
    ],
)
def test_the_sandbox_refuses_a_unicode_domain_where_the_real_api_does(sandbox, path, body, auth):
    response = requests.post(sandbox.url + path, json=body, timeout=5, **auth)
    assert response.status_code == 400
    ascii_body = {**body, "email": PUNYCODE}
    assert requests.post(sandbox.url + path, json=ascii_body, timeout=5, **auth).status_code in (200, 201)
