-- A credential id is at most 1023 bytes (WebAuthn L3 §6.5.1): 1364 characters as stored
-- (base64url without padding; MAX_ID_CHARS in server/src/store/passkeys.rs, which a test ties to this
-- file). Only an answer written by hand has a longer one, which earlier versions stored (SQLite
-- up to webauthn-rs's 4096 bytes) and which its account's owner could not remove (a removal's
-- DPoP proof cannot name an id that long): removed.
DELETE FROM passkeys WHERE length(id) > 1364;
