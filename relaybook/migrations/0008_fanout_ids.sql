-- The ids of one fan-out from a single random draw. uuid_v7() draws 16 random bytes from
-- the operating system for every id (about 3 microseconds each: 0.8 s of a fan-out of
-- 200,000 deliveries); a fan-out now draws one id and numbers the rest from it, which
-- also makes its ids strictly increasing in the order the rows are written, so each
-- lands at the end of the primary key.
--
-- uuid_v7_step(first, step) is ``first`` with ``step`` (0 to 2^30 - 1, else null) in the
-- 30 bits after the variant: RFC 9562's fixed-length counter (section 6.2, method 1),
-- the timestamp and the 44 other random bits kept. Two fan-outs in the same millisecond
-- collide only if their 44 random bits do.
CREATE FUNCTION uuid_v7_step(first uuid, step bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN step BETWEEN 0 AND 1073741823 THEN
        (left(first::text, 19)
         || to_hex(x'8000000000000000'::bigint
                   | (step << 32)
                   | ('x' || right(first::text, 8))::bit(32)::bigint))::uuid
    END
$$;
