-- Each provider call is written down before it is made, as a row of its own. It used to
-- be an update of the delivery: a new version of a wide row with all of its indexes,
-- just before the outcome wrote another (100,000 emails: 7,369/s before, 8,862/s after,
-- bench/fanout.py). The delivery's send_attempts, attempt_started_at and address now
-- follow with its outcome; an attempt newer than the delivery's send_attempts was in
-- flight when a worker stopped without recording what the provider said.
CREATE TABLE send_attempts (
    delivery_id  uuid NOT NULL REFERENCES deliveries (id),
    attempt      integer NOT NULL CHECK (attempt >= 1),
    started_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);
