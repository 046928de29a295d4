"""The send workers: consume send jobs, call SendGrid and Twilio, record what they said
(``relaybook worker``)."""
