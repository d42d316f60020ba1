from django.core.management.base import BaseCommand

from contacts.emails import canonical_email
from contacts.merge import MERGED_KEY, MergeRefused, decide, find_duplicates, merge_group, rewrite_emails, spelling
from integrations.registry import verbose_crm_name


class Command(BaseCommand):
    help = (
        "Report the contacts whose emails are one mailbox (differing only in Unicode "
        "normalization or a punycode domain), and the contacts stored in a non-canonical "
        "form; merge and rewrite them on confirmation. A merge keeps every field, attribute "
        "and sync state (conflicting values go to the survivor's attributes['%s'])." % MERGED_KEY
    )

    def add_arguments(self, parser):
        parser.add_argument("--merge", action="store_true", help="Merge and rewrite without asking.")
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Never ask: without --merge, only report.",
        )

    def handle(self, *args, merge, interactive, **options):
        self.verbosity = options["verbosity"]
        plan = find_duplicates()
        if not plan.groups and not plan.rewrites:
            self.stdout.write(self.style.SUCCESS("Every contact's email is canonical and none is a duplicate."))
            return
        self._report(plan)
        if not (merge or (interactive and self._confirmed(plan))):
            self.stdout.write("Report only: nothing was changed. Run with --merge to merge and rewrite.")
            return
        results = [merge_group(group) for group in plan.groups]
        rewritten, left = rewrite_emails(plan.rewrites)
        self._summarise(results, rewritten, left)

    # Report

    def _report(self, plan):
        merged = sum(len(group.merged) for group in plan.groups)
        self.stdout.write(
            "%d groups of contacts are one mailbox (%d contacts would be merged into others); "
            "%d emails are stored in a non-canonical form that collides with nothing."
            % (len(plan.groups), merged, len(plan.rewrites))
        )
        if self.verbosity < 1:
            return
        for group in plan.groups:
            self._report_group(group)
        if plan.rewrites:
            self.stdout.write("\nRewritten to the canonical form:")
            for contact in plan.rewrites:
                self.stdout.write(
                    "  #%d %s -> %s" % (contact.pk, spelling(contact.email), canonical_email(contact.email))
                )

    def _report_group(self, group):
        self.stdout.write("\n%s: %d contacts" % (group.email, len(group.contacts)))
        self.stdout.write("  keeps %s, the oldest" % described(group.survivor))
        for contact in group.merged:
            self.stdout.write("  merges %s" % described(contact))
        try:
            decision = decide(group)
        except MergeRefused as exc:
            self.stdout.write(self.style.WARNING("  cannot be merged: %s" % exc))
            return
        for note in decision.notes:
            self.stdout.write("  " + note)
        if decision.requeue:
            names = ", ".join(verbose_crm_name(crm) for crm in decision.requeue)
            self.stdout.write("  queued again for %s with the merged data" % names)
        if decision.in_flight:
            crms = ", ".join(sorted({verbose_crm_name(s.crm) for s in decision.in_flight}))
            self.stdout.write(
                self.style.WARNING("  being pushed to %s right now: it would be left for a later run" % crms)
            )

    def _confirmed(self, plan):
        question = "Merge %d groups and rewrite %d emails? [y/N] " % (len(plan.groups), len(plan.rewrites))
        try:
            return input(question).strip().lower() in ("y", "yes")
        except EOFError:
            return False

    # Summary

    def _summarise(self, results, rewritten, left):
        merged = [r for r in results if r.merged]
        removed = sum(len(r.removed) for r in merged)
        for result in results:
            if not result.merged:
                self.stdout.write(self.style.WARNING("%s: %s" % (result.email, result.reason)))
        if left:
            self.stdout.write(
                self.style.WARNING(
                    "%d emails now collide with a contact created since the report; run this again." % len(left)
                )
            )
        summary = "Merged %d groups (%d contacts merged into their survivor); rewrote %d emails; %d groups left." % (
            len(merged),
            removed,
            len(rewritten),
            len(results) - len(merged),
        )
        style = self.style.SUCCESS if len(merged) == len(results) and not left else self.style.WARNING
        self.stdout.write(style(summary))


def described(contact):
    return "#%d %s (created %s)" % (
        contact.pk,
        spelling(contact.email),
        contact.created_at.strftime("%Y-%m-%d %H:%M UTC"),
    )
