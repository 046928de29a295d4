"""The dispatcher: the API platform services publish notices through, and managers read
the journal, statistics and preferences from (``relaybook dispatcher``)."""
