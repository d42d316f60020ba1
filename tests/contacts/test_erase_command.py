"""manage.py erase_contacts: emails as arguments or in a file, checked before anything
starts, each erasure reported per CRM."""

import io

import pytest
from django.core.management import CommandError, call_command

from contacts.models import Erasure, Suppression
from contacts.suppression import email_hash

pytestmark = pytest.mark.django_db


def erase(*args):
    out = io.StringIO()
    call_command("erase_contacts", *args, stdout=out)
    return out.getvalue()


def test_erases_the_emails_given_and_says_per_crm_what_happens(configure_crms, suppression_key, make_contact):
    configure_crms("brevo", "hubspot")
    make_contact(email="ann@example.com")

    output = erase("Ann@Example.com", "bob@example.com", "--requested-by", "dpo")

    erasures = list(Erasure.objects.order_by("pk"))
    assert [e.email_hash for e in erasures] == [email_hash("ann@example.com"), email_hash("bob@example.com")]
    assert {(e.requested_by, e.requested_via) for e in erasures} == {("dpo", "command")}
    assert "Erasure %d:" % erasures[0].pk in output
    assert "  Brevo: queued\n  HubSpot: queued\n  Mautic: not configured: erase there by hand\n" in output
    assert "  n8n: not configured: erase there by hand\n" in output
    assert Suppression.objects.count() == 2


def test_reads_a_file_skipping_blank_lines_and_comments(configure_crms, suppression_key, tmp_path):
    configure_crms("brevo")
    listing = tmp_path / "erase.txt"
    listing.write_text("# from the DPO's ticket 42\nann@example.com\n\n  bob@example.com  \n# done\n")

    erase("--file", str(listing))

    assert set(Erasure.objects.values_list("email_hash", flat=True)) == {
        email_hash("ann@example.com"),
        email_hash("bob@example.com"),
    }


def test_requested_by_defaults_to_the_os_user(configure_crms, suppression_key, monkeypatch):
    configure_crms("brevo")
    monkeypatch.setattr("getpass.getuser", lambda: "operator")
    erase("ann@example.com")
    assert Erasure.objects.get().requested_by == "operator"


def test_a_bad_email_starts_nothing(configure_crms, suppression_key, tmp_path):
    configure_crms("brevo")
    listing = tmp_path / "erase.txt"
    listing.write_text("bob@example.com\nnot-an-email\n")

    with pytest.raises(CommandError, match=r"Not a valid email address: 'not-an-email'\. Nothing was erased\."):
        erase("ann@example.com", "--file", str(listing))

    assert not Erasure.objects.exists()
    assert not Suppression.objects.exists()


def test_no_email_at_all_is_an_error(suppression_key):
    with pytest.raises(CommandError, match="at least one email"):
        erase()


def test_an_unreadable_file_is_an_error(suppression_key, tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        erase("--file", str(tmp_path / "missing.txt"))


def test_without_the_key_it_says_to_set_it(configure_crms, no_suppression_key):
    configure_crms("brevo")
    with pytest.raises(CommandError, match="CRMSYNC_SUPPRESSION_KEY is not set"):
        erase("ann@example.com")
    assert not Erasure.objects.exists()
