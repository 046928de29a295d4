"""The journal as it is read: every message, filtered and paged; one message with its
event timeline; a notice's recipients with the state of each of their messages
(:mod:`relaybook.journal.reader`, its SQL in ``queries.sql``). ``insert_events`` there
is the one statement that stores events in ``delivery_events`` (the tracker runs it)."""
