"""The CSV import fed malformed files: a bad row is rejected with its line number
and the rest of the file goes on; a file that cannot be read writes nothing; a row
is never half-written."""

import csv
import random

import pytest
from django.core.management import CommandError
from django.db import DatabaseError

from contacts import selection
from contacts.models import Contact, ContactSync, ProcessingStatus, SyncStatus

from .test_import import HEADER, run_import, write_csv

pytestmark = pytest.mark.django_db


def emails():
    return set(Contact.objects.values_list("email", flat=True))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "The file is empty"),
        (b"\xef\xbb\xbf", "The file is empty"),
        (b"\r\n  \n\n", "The file is empty"),
        (HEADER.encode("utf-16"), "Line 1, the header row, is not UTF-8 text"),
        (random.Random(7).randbytes(4096), "is not UTF-8 text"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00b\xee\x9dh^\x01\x00\x00", "is not UTF-8 text"),
        (b"email,first_\x00name\na@example.com,A\n", "is not UTF-8 text"),
        (
            b"ann@example.com,Ann\nbob@example.com,Bob\n",
            "Line 1 looks like a contact ('ann@example.com', 'Ann'), not a header row",
        ),
        (b"name,company\nAnn,Acme\n", "The header row has no 'email' column (found: 'name', 'company')"),
        (b"Email,email\na@example.com,b@example.com\n", "names these columns more than once: email"),
        (b"email,First Name,first_name\na@example.com,A,B\n", "names these columns more than once: first_name"),
        (b'"email,first_name\na@example.com,A\n', "The header row (line 2) is not valid CSV: unexpected end of data"),
    ],
    ids=[
        "empty",
        "only-a-bom",
        "only-blank-lines",
        "utf-16",
        "binary-garbage",
        "xlsx-workbook",
        "nul-in-header",
        "no-header",
        "no-email-column",
        "duplicate-column",
        "duplicate-column-two-spellings",
        "header-quote-never-closed",
    ],
)
def test_a_file_that_cannot_be_read_is_refused_whole_and_writes_nothing(tmp_path, content, message):
    path = write_csv(tmp_path, content)
    with pytest.raises(CommandError) as excinfo:
        run_import(path, "--select", "brevo")
    assert message in str(excinfo.value)
    assert str(excinfo.value).startswith(path + ": ")
    assert not Contact.objects.exists()
    assert not ContactSync.objects.exists()


def test_a_long_garbage_header_is_shown_shortened(tmp_path):
    path = write_csv(tmp_path, ",".join("column%d" % i for i in range(40)) + "," + "x" * 5000 + "\n")
    with pytest.raises(CommandError) as excinfo:
        run_import(path)
    assert "'column9', ... (41 in all)" in str(excinfo.value)
    assert len(str(excinfo.value)) < 500


def test_only_a_header_imports_nothing_and_says_so(tmp_path):
    out, err = run_import(write_csv(tmp_path, HEADER))
    assert "Created 0, updated 0, unchanged 0, rejected 0 of 0 rows" in out
    assert "The file has a header row but no contacts after it." in out
    assert err == ""


def test_blank_lines_before_the_header_are_skipped_and_still_counted(tmp_path):
    path = write_csv(tmp_path, "\n\n" + HEADER + "a@example.com,A,,,,\nbad,,,,,\n")
    _, err = run_import(path)
    assert err.splitlines() == ["line 5: rejected: email 'bad' is not a valid email address"]
    assert emails() == {"a@example.com"}


def test_ragged_rows(tmp_path, make_contact):
    make_contact(email="short@example.com", last_name="Kept", company="Acme")
    path = write_csv(
        tmp_path,
        "email,first_name,last_name,company\n"
        "long@example.com,L,,,surplus\n"
        "short@example.com,Shorty\n"
        "ok@example.com,O,,\n",
    )
    out, err = run_import(path)
    assert err.splitlines() == ["line 2: rejected: it has 5 values but the header has 4 columns"]
    # Missing trailing cells are empty cells: they keep what the contact has.
    short = Contact.objects.get(email="short@example.com")
    assert (short.first_name, short.last_name, short.company) == ("Shorty", "Kept", "Acme")
    assert emails() == {"short@example.com", "ok@example.com"}
    assert "Created 1, updated 1, unchanged 0, rejected 1 of 3 rows" in out


def test_a_row_too_short_to_reach_the_email_column_says_so(tmp_path):
    path = write_csv(tmp_path, "first_name,last_name,email\nAnn,Lee\nBob,Bee,bob@example.com\n")
    _, err = run_import(path)
    assert err.splitlines() == ["line 2: rejected: it has 2 values but the header has 3 columns, so it has no email"]
    assert emails() == {"bob@example.com"}


def test_a_quote_never_closed_rejects_the_rest_of_the_file_naming_its_lines(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER
        + "a@example.com,A,,,,\n"
        + 'open@example.com,"Open,,,,\n'
        + "b@example.com,B,,,,\n"
        + "c@example.com,C,,,,\n",
    )
    out, err = run_import(path)
    assert err.splitlines() == [
        "line 3: rejected: a quoted value opened on line 3 is never closed: the rest of the file (lines 3-5) is part of it"  # noqa: E501
    ]
    # Before this check, b and c vanished into open@example.com's first name.
    assert emails() == {"a@example.com"}
    assert "rejected 1 of 2 rows" in out


def test_a_stray_quote_rejects_only_its_row(tmp_path):
    path = write_csv(tmp_path, HEADER + 'a@example.com,"Ann"ie,,,,\nb@example.com,B,,,,\n')
    _, err = run_import(path)
    assert err.splitlines() == ["line 2: rejected: the CSV is malformed in line 2 (',' expected after '\"')"]
    assert emails() == {"b@example.com"}


def test_a_quote_closed_lines_later_rejects_the_lines_it_swallowed(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER + 'a@example.com,"Ann,,,,\nb@example.com,"Bob",,,,\nc@example.com,C,,,,\n',
    )
    _, err = run_import(path)
    assert err.splitlines() == ["line 2: rejected: the CSV is malformed in lines 2-3 (',' expected after '\"')"]
    assert emails() == {"c@example.com"}


@pytest.fixture
def small_field_limit():
    previous = csv.field_size_limit(1000)
    yield 1000
    csv.field_size_limit(previous)


def test_a_value_over_the_csv_field_size_limit_stops_the_file_there_naming_the_lines(tmp_path, small_field_limit):
    path = write_csv(
        tmp_path,
        HEADER + "a@example.com,A,,,,\n" + 'b@example.com,"%s",,,,\n' % ("y\n" * 3000) + "c@example.com,C,,,,\n",
    )
    out, err = run_import(path)
    # Reading on inside the quoted value would take its lines for rows.
    assert err.splitlines() == [
        "line 3: rejected: a value is longer than 1000 characters, the most a CSV cell may hold; "
        "the file cannot be read past it, so lines 3-3004 were not imported"
    ]
    assert emails() == {"a@example.com"}
    assert "Created 1, updated 0, unchanged 0, rejected 1 of 2 rows" in out


def test_mixed_line_endings_are_all_line_ends(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER.replace("\n", "\r\n")
        + "crlf@example.com,A,,,,\r\n"
        + "cr@example.com,B,,,,\r"
        + 'lf@example.com,"Two\r\nlines",,,,\n'
        + "bad,,,,,\r"
        + "last@example.com,L,,,,",
    )
    out, err = run_import(path)
    assert err.splitlines() == ["line 6: rejected: email 'bad' is not a valid email address"]
    assert emails() == {"crlf@example.com", "cr@example.com", "lf@example.com", "last@example.com"}
    assert Contact.objects.get(email="lf@example.com").first_name == "Two\r\nlines"
    assert "Created 4, updated 0, unchanged 0, rejected 1 of 5 rows" in out


def test_nul_bytes_and_bytes_that_are_not_utf8_reject_their_rows(tmp_path):
    path = write_csv(
        tmp_path,
        HEADER.encode()
        + b"nul@example.com,A\x00nn,,,,\n"
        + b"ren\xe9@example.com,Ren\xe9,,,,\n"
        + b"ok@example.com,Zo\xc3\xab,,,,\n",
    )
    _, err = run_import(path)
    assert err.splitlines() == [
        "line 2: rejected: first_name contains a NUL character, which is not text",
        "line 3: rejected: email is not valid UTF-8 text",
    ]
    assert emails() == {"ok@example.com"}


@pytest.mark.parametrize("batch_size", ["1000", "1"])
def test_a_row_whose_selection_fails_is_not_written_at_all(tmp_path, monkeypatch, batch_size):
    real_select = selection.select

    def select_failing_for_b(queryset, crms):
        if queryset.filter(email="b@example.com").exists():
            raise DatabaseError("could not queue b@example.com")
        return real_select(queryset, crms)

    monkeypatch.setattr(selection, "select", select_failing_for_b)
    path = write_csv(tmp_path, HEADER + "a@example.com,A,,,,\nb@example.com,B,,,,\nc@example.com,C,,,,\n")

    out, err = run_import(path, "--select", "brevo", "--batch-size", batch_size)

    assert err.splitlines() == ["line 3: rejected: the database refused it: could not queue b@example.com"]
    assert emails() == {"a@example.com", "c@example.com"}, "b must not be written without its selection"
    assert set(ContactSync.objects.values_list("contact__email", "sync_status", "processing_status")) == {
        ("a@example.com", SyncStatus.SELECTED, ProcessingStatus.QUEUED),
        ("c@example.com", SyncStatus.SELECTED, ProcessingStatus.QUEUED),
    }
    assert "Created 2, updated 0, unchanged 0, rejected 1 of 3 rows" in out
    assert "Queued 2 syncs for Brevo." in out


def test_an_update_whose_selection_fails_leaves_the_contact_as_it_was(tmp_path, monkeypatch, make_contact):
    make_contact(email="b@example.com", first_name="Before")

    def select_failing(queryset, crms):
        raise DatabaseError("could not queue")

    monkeypatch.setattr(selection, "select", select_failing)
    _, err = run_import(write_csv(tmp_path, HEADER + "b@example.com,After,,,,\n"), "--select", "brevo")

    assert err.splitlines() == ["line 2: rejected: the database refused it: could not queue"]
    assert Contact.objects.get().first_name == "Before"
    assert not ContactSync.objects.exists()
