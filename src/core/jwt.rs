//! Decoding (never verifying) a JWT's payload, for display and as a fallback lifetime.
//! Verification is the server's job; the client only reads claims it was handed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a token's payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three dot-separated segments.
    Shape,
    /// The payload is not unpadded base64url.
    Base64,
    /// The payload is not UTF-8.
    Utf8,
    /// Larger than any access token has reason to be (16 KiB).
    TooLarge,
}

/// Largest token whose payload we decode.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The payload segment of a compact JWS, decoded to its JSON text.
pub fn decode_payload(token: &str) -> Result<String, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(JwtError::Shape);
    }
    // Some issuers pad; the spec says they must not, but reading it costs nothing.
    let payload = payload.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| JwtError::Base64)?;
    String::from_utf8(bytes).map_err(|_| JwtError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    // {"alg":"EdDSA","typ":"at+jwt"} . {"sub":"u1","exp":1700000600,"iat":1700000000,"name":"Zoë"}
    const TOKEN: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCJ9.\
        eyJzdWIiOiJ1MSIsImV4cCI6MTcwMDAwMDYwMCwiaWF0IjoxNzAwMDAwMDAwLCJuYW1lIjoiWm_DqyJ9.c2ln";

    #[test]
    fn decodes_the_payload_of_a_compact_jwt() {
        assert_eq!(
            decode_payload(TOKEN),
            Ok(r#"{"sub":"u1","exp":1700000600,"iat":1700000000,"name":"Zoë"}"#.to_owned())
        );
    }

    #[test]
    fn tolerates_padding_on_the_payload() {
        let padded = TOKEN.replace(".c2ln", "").to_owned() + "==.c2ln";
        assert!(decode_payload(&padded).is_ok());
    }

    #[test]
    fn rejects_tokens_of_the_wrong_shape() {
        for bad in ["", "abc", "a.b", "a.b.c.d", ".e30.", "a..c"] {
            assert_eq!(decode_payload(bad), Err(JwtError::Shape), "{bad:?}");
        }
    }

    #[test]
    fn rejects_a_payload_that_is_not_base64url() {
        assert_eq!(decode_payload("a.e30+/.c"), Err(JwtError::Base64));
        assert_eq!(decode_payload("a.!!!.c"), Err(JwtError::Base64));
    }

    #[test]
    fn rejects_a_payload_that_is_not_utf8() {
        // 0xff 0xfe
        assert_eq!(decode_payload("a.__4.c"), Err(JwtError::Utf8));
    }

    #[test]
    fn refuses_huge_tokens_without_decoding_them() {
        let huge = "a.".to_owned() + &"A".repeat(MAX_TOKEN_LEN) + ".c";
        assert_eq!(decode_payload(&huge), Err(JwtError::TooLarge));
    }
}
