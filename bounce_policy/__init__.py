"""The bounce policy: unsubscribes recipients whose addresses keep failing, and only them
(``relaybook bounce-policy``)."""
