"""Content: what a message says to its recipient. A notice's templates rendered for each
recipient in their language (:mod:`relaybook.content.templates`), and how many SMS
segments a text takes (:mod:`relaybook.content.segments`)."""
