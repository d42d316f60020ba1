from django.core.management.base import BaseCommand, CommandError

from integrations import rollups


class Command(BaseCommand):
    help = (
        "Recount the dashboard's rollups (sync rows by status, attempts by quarter hour, "
        "contacts) from the tables, or with --check only compare them with a real count. "
        "Database triggers keep them exact; this is for when something went around them "
        "(triggers disabled, a restore of part of the tables). Workers wait while it runs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default", help="Database alias (default: %(default)s).")
        parser.add_argument(
            "--check",
            action="store_true",
            help="Change nothing: compare each count with a real COUNT and fail if any differs.",
        )

    def handle(self, *args, database, check, **options):
        if rollups.missing_triggers(database):
            raise CommandError(
                "The rollup triggers are missing: run `manage.py migrate`, which puts them back and recounts.",
                returncode=2,
            )
        if check:
            return self._check(database)
        rollups.rebuild(database)
        self.stdout.write(self.style.SUCCESS("Rollups rebuilt from the tables."))

    def _check(self, database):
        differences = rollups.differences(database)
        for table, key, rolled, real in differences:
            self.stdout.write("%s %s: rollup %d, real count %d" % (table, ", ".join(map(str, key)), rolled, real))
        if differences:
            raise CommandError(
                "%d rollup counts differ from the tables; `manage.py rebuild_rollups` recounts them." % len(differences)
            )
        self.stdout.write(self.style.SUCCESS("Rollups match the tables."))
