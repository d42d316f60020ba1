import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

PASSWORD_FILE = ".dev-admin-password"


class Command(BaseCommand):
    help = (
        "On a development machine, create a superuser with a random password if none "
        "exists, keep the password in a git-ignored file, and print how to log in."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin", help="Name of the superuser to create.")
        parser.add_argument(
            "--password-file",
            default=str(Path(settings.BASE_DIR) / PASSWORD_FILE),
            help="Where to keep the generated password (default: %(default)s).",
        )

    def handle(self, *args, username, password_file, **options):
        if not settings.DEBUG:
            raise CommandError(
                "ensure_dev_superuser only runs with DEBUG=true; in production use 'manage.py createsuperuser'."
            )
        password_path = Path(password_file)
        User = get_user_model()
        superuser = User.objects.filter(is_superuser=True).order_by("pk").first()
        if superuser is None:
            password = secrets.token_urlsafe(18)
            superuser = User.objects.create_superuser(username=username, email="", password=password)
            password_path.write_text(password + "\n")
            password_path.chmod(0o600)
            self.stdout.write(self.style.SUCCESS("Created the superuser %r." % username))
        elif not password_path.exists():
            self.stdout.write(
                "Log in at %s as %r with its password, or set "
                "a new one with 'manage.py changepassword %s'."
                % (admin_url(), superuser.get_username(), superuser.get_username())
            )
            return
        self.stdout.write(
            "Log in at %s as %r with the password in %s" % (admin_url(), superuser.get_username(), password_path)
        )


def admin_url():
    """The admin's address as bin/run-dev serves it (PORT, default 8000)."""
    return "http://127.0.0.1:%s/admin/" % (os.environ.get("PORT") or "8000")
