from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command


def run(tmp_path):
    out = StringIO()
    call_command("ensure_dev_superuser", password_file=str(tmp_path / "pw"), stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_creates_one_superuser_with_a_random_password_kept_in_a_private_file(tmp_path, settings):
    settings.DEBUG = True
    out = run(tmp_path)

    password = (tmp_path / "pw").read_text().strip()
    user = User.objects.get()
    assert user.is_superuser and user.check_password(password)
    assert len(password) >= 20
    assert (tmp_path / "pw").stat().st_mode & 0o077 == 0
    assert password not in out
    assert "as 'admin' with the password in" in out

    run(tmp_path)
    assert User.objects.count() == 1
    assert (tmp_path / "pw").read_text().strip() == password


@pytest.mark.django_db
def test_two_machines_get_different_passwords(tmp_path, settings):
    settings.DEBUG = True
    run(tmp_path)
    first = (tmp_path / "pw").read_text()
    User.objects.all().delete()
    run(tmp_path)
    assert (tmp_path / "pw").read_text() != first


@pytest.mark.django_db
def test_refused_when_debug_is_off(tmp_path, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="only runs with DEBUG=true"):
        run(tmp_path)
    assert not User.objects.exists()


@pytest.mark.django_db
def test_demo_contacts_fill_an_empty_database_once(settings):
    from contacts.models import Contact

    settings.DEBUG = True
    call_command("demo_contacts", "--count", "25", "--if-empty", stdout=StringIO())
    call_command("demo_contacts", "--count", "25", "--if-empty", stdout=StringIO())
    assert Contact.objects.count() == 25
    from django.core.validators import validate_email

    for email in Contact.objects.values_list("email", flat=True):
        assert email.endswith("@example.com")
        validate_email(email)  # raises for an address no CRM would take
