from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus

HEADER = "email,first_name,last_name,phone,company,website\n"


def write_csv(tmp_path, text, name="contacts.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def run_import(path, *args):
    out, err = StringIO(), StringIO()
    call_command("import_contacts", path, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
class TestImport:
    def test_creates_contacts_with_unknown_columns_as_attributes(self, tmp_path):
        path = write_csv(
            tmp_path,
            "Email,First Name,last_name,phone,company,website,Lead Score,Source\n"
            "Ann@Example.com,Ann,Lee,+44 20 7946 0000,Acme,acme.test,7,fair\n",
        )
        out, err = run_import(path)

        contact = Contact.objects.get()
        assert contact.email == "ann@example.com"
        assert (contact.first_name, contact.last_name, contact.company) == ("Ann", "Lee", "Acme")
        assert contact.website == "https://acme.test"
        assert contact.attributes == {"lead_score": "7", "source": "fair"}
        assert "Created 1, updated 0, unchanged 0, rejected 0 of 1 rows" in out
        assert err == ""

    def test_bad_rows_are_reported_by_line_and_never_stop_the_file(self, tmp_path):
        path = write_csv(
            tmp_path,
            HEADER
            + "good1@example.com,A,,,,\n"
            + "not-an-email,B,,,,\n"
            + '"quoted@example.com","Multi\nline",,,,\n'
            + ",no email,,,,\n"
            + "long@example.com,%s,,,,\n" % ("x" * 10_000)
            + "web@example.com,W,,,,not a url\n"
            + "extra@example.com,E,,,,,surplus\n"
            + "good2@example.com,C,,,,\n",
        )
        out, err = run_import(path)

        assert set(Contact.objects.values_list("email", flat=True)) == {
            "good1@example.com",
            "quoted@example.com",
            "good2@example.com",
        }
        assert Contact.objects.get(email="quoted@example.com").first_name == "Multi\nline"
        assert err.splitlines() == [
            "line 3: rejected: email 'not-an-email' is not a valid email address",
            "line 6: rejected: email is empty",
            "line 7: rejected: first_name is 10000 characters long; the limit is 150",
            "line 8: rejected: website 'not a url' is not a valid web address",
            "line 9: rejected: it has 7 values but the header has 6 columns",
        ]
        assert "Created 3, updated 0, unchanged 0, rejected 5 of 8 rows" in out

    def test_upserts_by_email_keeping_what_empty_cells_do_not_say(self, tmp_path, make_contact):
        make_contact(email="ann@example.com", first_name="Ann", phone="+1 555", attributes={"tier": "gold"})
        path = write_csv(tmp_path, "email,first_name,last_name,phone,score\nANN@example.com,,Lee,,9\n")

        out, _ = run_import(path)

        contact = Contact.objects.get()
        assert (contact.first_name, contact.last_name, contact.phone) == ("Ann", "Lee", "+1 555")
        assert contact.attributes == {"tier": "gold", "score": "9"}
        assert "Created 0, updated 1, unchanged 0, rejected 0 of 1 rows" in out

    @pytest.mark.parametrize("batch_size", ["1000", "2"])
    def test_duplicate_rows_in_the_file_update_the_same_contact(self, tmp_path, batch_size):
        path = write_csv(
            tmp_path,
            HEADER
            + "dup@example.com,First,,,Acme,\n"
            + "other@example.com,O,,,,\n"
            + "third@example.com,T,,,,\n"
            + "DUP@example.com,,Later,,,\n",
        )
        out, _ = run_import(path, "--batch-size", batch_size)

        assert Contact.objects.count() == 3
        dup = Contact.objects.get(email="dup@example.com")
        assert (dup.first_name, dup.last_name, dup.company) == ("First", "Later", "Acme")
        assert "Created 3, updated 1, unchanged 0, rejected 0 of 4 rows" in out

    def test_select_queues_the_imported_contacts(self, tmp_path, make_contact):
        bystander = make_contact()
        path = write_csv(tmp_path, HEADER + "a@example.com,A,,,,\nb@example.com,B,,,,\nbad,,,,,\n")

        out, _ = run_import(path, "--select", "brevo,hubspot")

        rows = ContactSync.objects.all()
        assert rows.count() == 4
        assert set(rows.values_list("sync_status", "processing_status")) == {
            (SyncStatus.SELECTED, ProcessingStatus.QUEUED)
        }
        assert not rows.filter(contact=bystander).exists()
        assert "Queued 4 syncs for Brevo, HubSpot." in out

    def test_dry_run_writes_nothing_but_reports_what_would_happen(self, tmp_path, make_contact):
        make_contact(email="old@example.com", first_name="Old")
        path = write_csv(
            tmp_path, HEADER + "old@example.com,New,,,,\nnew@example.com,N,,,,\nnew@example.com,N,,,,\nbad,,,,,\n"
        )

        out, err = run_import(path, "--dry-run", "--select", "brevo", "--batch-size", "1")

        assert "Would create 1, update 2, leave unchanged 0, reject 1 of 4 rows" in out
        assert "Dry run: nothing was written." in out
        assert "line 5: rejected" in err
        assert list(Contact.objects.values_list("email", "first_name")) == [("old@example.com", "Old")]
        assert not ContactSync.objects.exists()

    def test_reads_a_byte_order_mark_crlf_and_unicode(self, tmp_path):
        path = write_csv(tmp_path, "\ufeffemail,first_name\r\nzoe@example.com,Zoë 🌱\r\n")
        run_import(path)
        assert Contact.objects.get().first_name == "Zoë 🌱"

    def test_text_that_is_not_utf8_is_rejected_row_by_row(self, tmp_path):
        path = write_csv(tmp_path, HEADER.encode() + b"a@example.com,Ren\xe9,,,,\nb@example.com,Bo,,,,\n")
        _out, err = run_import(path)
        assert "line 2: rejected: first_name is not valid UTF-8 text" in err
        assert list(Contact.objects.values_list("email", flat=True)) == ["b@example.com"]

    def test_a_file_without_an_email_column_is_refused_whole(self, tmp_path):
        path = write_csv(tmp_path, "name,company\nAnn,Acme\n")
        with pytest.raises(CommandError, match="The header row has no 'email' column"):
            run_import(path)
        assert not Contact.objects.exists()

    def test_an_unknown_crm_is_refused_before_reading(self, tmp_path):
        path = write_csv(tmp_path, HEADER + "a@example.com,A,,,,\n")
        with pytest.raises(CommandError, match="Unknown CRM 'salesforce'"):
            run_import(path, "--select", "brevo,salesforce")
        assert not Contact.objects.exists()

    def test_a_missing_file_is_a_clear_error(self, tmp_path):
        with pytest.raises(CommandError, match=r"Cannot read .*missing\.csv: No such file"):
            run_import(str(tmp_path / "missing.csv"))

    def test_writes_in_batches_not_per_row(self, tmp_path, django_assert_max_num_queries):
        rows = "".join("p%d@example.com,P%d,,,,\n" % (i, i) for i in range(500))
        path = write_csv(tmp_path, HEADER + rows)
        # Per batch: look up existing emails, then the upsert in a savepoint (SQLite
        # splits one upsert by its bound-variable limit). Per row would be 500+.
        with django_assert_max_num_queries(20):
            run_import(path, "--batch-size", "250")
        assert Contact.objects.count() == 500
