"""Deliveries: one message of a notice to one recipient on one channel, and its state.

This package is the one writer of ``deliveries``: every statement that inserts or
updates a delivery is one of its named transitions, in ``queries.sql``
(tests/relaybook/test_one_writer.py fails if any other package's SQL or Python writes
the table). Callers load them with ``sql.load("relaybook.deliveries")``:

- ``fan_out``: a notice's deliveries, queued or skipped by the contact rule, in one
  set-based statement (relaybook.notices.store);
- ``retire_attempts``, ``add_resend_attempts``: a resend's new attempts
  (relaybook.notices.resends);
- ``clear_retries_due``: retries the relay published (dispatcher.outbox);
- ``skip``, ``record_accepted``, ``record_failed``, ``schedule_retry``, ``hold``,
  ``claim_moved_on``, ``release_moved_on``: the send worker's outcomes and its
  bookkeeping (send_worker.worker);
- ``project_events``: the providers' outcomes, from the journal (tracker.journal).

"The status only climbs" (queued < sent < delivered < opened < clicked < failed; skipped
only from queued, and final) is written once, as the SQL functions
``delivery_statuses()`` and ``delivery_status_after(was, proven)`` (``status_rule``,
applied by the migrations from there: relaybook/migrations/defined_delivery_status.sql).
Every transition that sets a status goes through it, so a worker and a tracker meeting
on one row leave the higher status whichever writes last. Which status a provider's
event proves is :mod:`relaybook.deliveries.precedence`'s.

Who records an outcome, once:

- **The worker** records what it did, ``sent`` (``record_accepted``), ``failed`` (a
  refusal, ``record_failed``), a retry (``schedule_retry``) and ``skipped`` (``skip``),
  in its own transaction, with its attempt bookkeeping: it must never send twice, so its
  outcome cannot wait for a round trip through Kafka.
- **The tracker** records the providers' outcomes (delivered, bounced, opened, clicked,
  ...). It stores every event in the journal (``delivery_events``), the worker's too, but
  does not project a worker's own events (event id ``relaybook:...``, provider
  ``relaybook``: schemas/delivery-event.v1.json): for them it only settles the notice.
  tests/tracker/test_outcomes_once.py shows such an event leaves the delivery's row
  untouched.
"""
