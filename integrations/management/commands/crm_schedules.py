from django.core.management.base import BaseCommand

from integrations.schedules import ensure_schedules


class Command(BaseCommand):
    help = (
        "Create, update or remove the django-q2 schedules so that every configured CRM "
        "has exactly one, at its interval. Safe to run any number of times, from any "
        "number of machines; `migrate` runs it too."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default", help="Database alias (default: %(default)s).")

    def handle(self, *args, database, **options):
        report = ensure_schedules(using=database)
        if options["verbosity"] < 1:
            return
        for action in ("created", "updated", "removed", "unchanged"):
            for name in report[action]:
                self.stdout.write("%s %s" % (action, name))
        self.stdout.write(self.style.SUCCESS("Schedules are up to date."))
