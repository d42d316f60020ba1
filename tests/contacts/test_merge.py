"""merge_duplicate_contacts: contacts stored before the canonical rule that are one
mailbox are reported, then merged on confirmation without losing anything."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from contacts.merge import MERGED_KEY, find_duplicates
from contacts.models import AttemptOutcome, Contact, ContactSync, ProcessingStatus, SyncAttempt, SyncStatus
from integrations.models import Enrichment, EnrichmentStatus

from .legacy_rows import stored_as

NFC = "zoe@ex\u00e4mple.com"
NFD = "zoe@exa\u0308mple.com"
PUNYCODE = "zoe@xn--exmple-cua.com"
S, P = SyncStatus, ProcessingStatus

pytestmark = pytest.mark.django_db


def sync(contact, crm, status, processing, external_id="", **fields):
    return ContactSync.objects.create(
        contact=contact, crm=crm, sync_status=status, processing_status=processing, external_id=external_id, **fields
    )


def attempt(contact, crm):
    return SyncAttempt.objects.create(
        contact=contact, crm=crm, attempted_at=timezone.now(), outcome=AttemptOutcome.ACCEPTED
    )


def run(*args, answer=None, monkeypatch=None):
    if answer is not None:
        monkeypatch.setattr("builtins.input", lambda question: answer)
    out = StringIO()
    call_command("merge_duplicate_contacts", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def snapshot():
    return (
        sorted(Contact.objects.values_list("pk", "email", "first_name", "phone", "attributes", "enrichment")),
        sorted(
            ContactSync.objects.values_list(
                "pk", "contact_id", "crm", "sync_status", "processing_status", "external_id"
            )
        ),
        sorted(SyncAttempt.objects.values_list("pk", "contact_id")),
        sorted(Enrichment.objects.values_list("pk", "contact_id")),
    )


@pytest.fixture
def zoe():
    """Three spellings of one mailbox, the decomposed one oldest, each with data the
    others lack or contradict."""
    oldest = stored_as(NFD, 30, first_name="Zoe", company="Acme", attributes={"source": "fair", "score": 3})
    middle = stored_as(NFC, 20, first_name="Zo\u00e9", company="Acme", attributes={"source": "web", "tags": ["a"]})
    newest = stored_as(PUNYCODE, 10, phone="+44 1", enrichment={"linkedin": "in/zoe"})
    sync(oldest, "brevo", S.COMPLETE, P.COMPLETE, "77")
    sync(middle, "brevo", S.COMPLETE, P.COMPLETE, "78")
    sync(newest, "hubspot", S.COMPLETE, P.COMPLETE, "901")
    sync(oldest, "mautic", S.SKIPPED, P.NONE)
    sync(middle, "mautic", S.ERROR, P.ERROR, "5", last_error="Mautic refused it", attempts=4)
    sync(newest, "n8n", S.NEW, P.NONE)
    attempt(middle, "brevo")
    attempt(newest, "hubspot")
    Enrichment.objects.create(enrichment_id="e-1", contact=newest, status=EnrichmentStatus.COMPLETE)
    return oldest, middle, newest


class TestReport:
    def test_reports_groups_and_changes_nothing(self, zoe):
        lonely = stored_as("ann@xn--bcher-kva.example", 5)
        before = snapshot()

        out = run("--no-input")

        assert snapshot() == before
        assert "1 groups of contacts are one mailbox (2 contacts would be merged into others); 1 emails" in out
        assert "keeps #%d zoe@exa\\u0308mple.com (decomposed)" % zoe[0].pk in out
        assert "first_name: keeps 'Zoe'; #%d's 'Zoé' is kept in attributes['merged_contacts']" % zoe[1].pk in out
        assert "phone: takes '+44 1' from #%d (empty on #%d)" % (zoe[2].pk, zoe[0].pk) in out
        assert "Brevo holds 2 records for this person (ids 77, 78): merge them in Brevo; crmsync keeps 77." in out
        assert "queued again for Brevo, HubSpot with the merged data" in out
        assert "#%d ann@xn--bcher-kva.example -> ann@b\u00fccher.example" % lonely.pk in out
        assert "Report only: nothing was changed." in out

    def test_answering_no_changes_nothing(self, zoe, monkeypatch):
        before = snapshot()
        out = run(answer="n", monkeypatch=monkeypatch)
        assert snapshot() == before
        assert "Report only" in out

    def test_finding_takes_the_same_queries_for_many_groups(self, django_assert_max_num_queries):
        for index in range(40):
            stored_as("p%d@exa\u0308mple.com" % index, 2)
            stored_as("p%d@xn--exmple-cua.com" % index, 1)
        for index in range(300):
            Contact.objects.create(email="plain%d@example.com" % index)
        with django_assert_max_num_queries(4):
            plan = find_duplicates()
        assert len(plan.groups) == 40 and not plan.rewrites


class TestMerge:
    def test_keeps_every_field_attribute_and_sync_state(self, zoe):
        oldest, middle, newest = zoe
        out = run("--merge")

        contact = Contact.objects.get()
        assert contact.pk == oldest.pk
        assert contact.email == NFC
        assert (contact.first_name, contact.company, contact.phone) == ("Zoe", "Acme", "+44 1")
        assert contact.enrichment == {"linkedin": "in/zoe"}
        merged = contact.attributes.pop(MERGED_KEY)
        assert contact.attributes == {"source": "fair", "score": 3, "tags": ["a"]}
        for entry in merged:
            assert entry.pop("merged_at") and entry.pop("created_at")
        assert merged == [
            {
                "id": middle.pk,
                "email": NFC,
                "fields": {"first_name": "Zo\u00e9"},
                "attributes": {"source": "web"},
                "syncs": [
                    {
                        "crm": "brevo",
                        "contact_id": middle.pk,
                        "sync_status": "complete",
                        "processing_status": "complete",
                        "external_id": "78",
                        "synced_at": None,
                        "attempts": 0,
                        "last_error": "",
                    },
                    {
                        "crm": "mautic",
                        "contact_id": oldest.pk,
                        "sync_status": "skipped",
                        "processing_status": "",
                        "external_id": "",
                        "synced_at": None,
                        "attempts": 0,
                        "last_error": "",
                    },
                ],
            },
            {"id": newest.pk, "email": PUNYCODE},
        ]
        rows = {s.crm: s for s in ContactSync.objects.filter(contact=contact)}
        assert set(rows) == {"brevo", "hubspot", "mautic", "n8n"} and ContactSync.objects.count() == 4
        assert (rows["brevo"].external_id, rows["brevo"].sync_status, rows["brevo"].processing_status) == (
            "77",
            S.SELECTED,
            P.QUEUED,
        )
        assert (rows["hubspot"].external_id, rows["hubspot"].sync_status, rows["hubspot"].processing_status) == (
            "901",
            S.SELECTED,
            P.QUEUED,
        )
        assert (rows["mautic"].external_id, rows["mautic"].sync_status, rows["mautic"].attempts) == ("5", S.ERROR, 4)
        assert rows["n8n"].sync_status == S.NEW
        assert SyncAttempt.objects.filter(contact=contact).count() == 2
        assert Enrichment.objects.get().contact_id == contact.pk
        assert "Merged 1 groups (2 contacts merged into their survivor); rewrote 0 emails; 0 groups left." in out

    def test_a_group_with_a_row_being_pushed_is_left_for_later(self, zoe):
        oldest, _middle, newest = zoe
        ContactSync.objects.filter(contact=newest, crm="hubspot").update(processing_status=P.PROCESSING)
        other = [stored_as("bo@b\u00fccher.example", 3), stored_as("bo@xn--bcher-kva.example", 2)]
        before = {c.pk for c in Contact.objects.all()}

        out = run("--merge", "--no-input")

        assert {c.pk for c in Contact.objects.all()} == before - {other[1].pk}
        assert "zoe@ex\u00e4mple.com: being pushed to HubSpot right now; not merged, run this again later" in out
        assert "Merged 1 groups (1 contacts merged into their survivor); rewrote 0 emails; 1 groups left." in out
        assert Contact.objects.get(pk=oldest.pk).email == NFD

    def test_rewrites_an_email_that_collides_with_nothing(self):
        lonely = stored_as("ann@xn--bcher-kva.example", 5)
        out = run("--merge")
        lonely.refresh_from_db()
        assert lonely.email == "ann@b\u00fccher.example"
        assert "rewrote 1 emails" in out

    def test_answering_yes_merges(self, zoe, monkeypatch):
        run(answer="y", monkeypatch=monkeypatch)
        assert Contact.objects.get().email == NFC

    def test_an_earlier_merge_record_is_carried_over(self):
        earlier = [{"id": 1, "email": "zoe@old.example"}]
        stored_as(NFD, 3, attributes={MERGED_KEY: earlier})
        newer = stored_as(NFC, 2, attributes={MERGED_KEY: [{"id": 2, "email": "z@old.example"}]})
        run("--merge")
        merged = Contact.objects.get().attributes[MERGED_KEY]
        assert [entry["id"] for entry in merged] == [1, 2, newer.pk]

    def test_an_attribute_named_like_the_merge_record_stops_only_its_group(self):
        stored_as(NFD, 3, attributes={MERGED_KEY: "not a list"})
        stored_as(NFC, 2)
        out = run("--merge")
        assert Contact.objects.count() == 2
        assert "attributes['merged_contacts'] of #" in out and "is not the list crmsync keeps there" in out
