"""The journal tracker: stores every delivery event once and projects it onto the
journal (``relaybook tracker``)."""
