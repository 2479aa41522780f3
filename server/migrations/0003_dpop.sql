-- DPoP (RFC 9449): a session logged in with a proof is bound to the key's RFC 7638 thumbprint.
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;

-- Secrets every instance sharing the database must agree on (the DPoP nonce secret).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
