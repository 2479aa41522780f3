-- A rotation publishes the next key before it signs (crate::keys): when it starts signing.
-- Keys stored before this sign from their creation; their stored retirement still counts.
ALTER TABLE signing_keys ADD COLUMN signs_from BIGINT;
