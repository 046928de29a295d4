-- Personalised notices (issue 35): templates over each recipient's data, in their language.
--
-- - recipients.language: the language a recipient reads (BCP 47: fr, nl-BE), kept on the
--   recipient like their addresses; null: the notice's default.
-- - notices.default_language: the language of the notice's top-level email and sms
--   content (its fallback); notices.content: the same content in other languages, as
--   {"nl": {"email": {"subject", "text", "html"}, "sms": {"text"}}}.
-- - notice_data: what a notice says to each recipient of their own (amounts, lots, due
--   date), once per recipient and notice: not per channel, never in Kafka.
-- - deliveries.language, content_sha256, segments: what a message went out as, recorded
--   by the send worker with its outcome: the language it was rendered in, the SHA-256 of
--   the rendered content, and for a text its segments.

ALTER TABLE recipients ADD COLUMN language text;
ALTER TABLE notices ADD COLUMN default_language text;
ALTER TABLE notices ADD COLUMN content jsonb;

CREATE TABLE notice_data (
    notice_id uuid NOT NULL REFERENCES notices (id),
    recipient_id text NOT NULL,
    agency_id text NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (notice_id, recipient_id)
);

ALTER TABLE notice_data ENABLE ROW LEVEL SECURITY;
CREATE POLICY notice_data_by_agency ON notice_data TO relaybook_api
    USING (relaybook_sees(agency_id)) WITH CHECK (relaybook_sees(agency_id));
GRANT SELECT, INSERT ON notice_data TO relaybook_api;

ALTER TABLE deliveries ADD COLUMN language text;
ALTER TABLE deliveries ADD COLUMN content_sha256 text;
ALTER TABLE deliveries ADD COLUMN segments smallint;
