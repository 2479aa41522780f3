//! Decoding (never verifying) a JWT's payload, for display and as a fallback lifetime.
//! Verification is the server's job; the client only reads claims it was handed.

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
    String::from_utf8(decode_payload_bytes(token)?).map_err(|_| JwtError::Utf8)
}

/// The payload segment's bytes (the web layer lets the browser's `TextDecoder` check UTF-8).
pub fn decode_payload_bytes(token: &str) -> Result<Vec<u8>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge);
    }
    // header.payload.signature: exactly two dots (bytes, not `str::split`: smaller wasm).
    let b = token.as_bytes();
    let (mut first, mut second, mut dots) = (0, 0, 0);
    for (i, &c) in b.iter().enumerate() {
        if c == b'.' {
            dots += 1;
            (first, second) = (second, i);
        }
    }
    if dots != 2 || first == 0 || second == first + 1 {
        return Err(JwtError::Shape);
    }
    let mut payload = &b[first + 1..second];
    // Some issuers pad; the spec says they must not, but reading it costs nothing.
    while let [rest @ .., b'='] = payload {
        payload = rest;
    }
    base64url_decode(payload).ok_or(JwtError::Base64)
}

/// Unpadded base64url (RFC 4648 §5), strict: no other alphabet, no stray bits.
/// Hand-written because the `base64` crate's generic engine costs ~3 KB of wasm here and we
/// only ever decode this one alphabet (see docs/SIZE.md). Six bits in per character, a byte
/// out whenever eight are there; what is left at the end must be fewer than six bits (a
/// single character of a group is impossible) and all zero.
fn base64url_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6 | u32::from(v)) & 0xfff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (bits < 6 && acc & ((1 << bits) - 1) == 0).then_some(out)
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
    fn base64url_round_trips_every_length_and_byte() {
        // Encoder for the test only: the library never encodes.
        fn encode(bytes: &[u8]) -> String {
            const A: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut s = String::new();
            for chunk in bytes.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    s.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                }
            }
            s
        }
        let bytes: Vec<u8> = (0..=255).collect();
        for len in 0..bytes.len() {
            let data = &bytes[len..];
            assert_eq!(
                base64url_decode(encode(data).as_bytes()).as_deref(),
                Some(data),
                "len {len}"
            );
        }
    }

    #[test]
    fn base64url_refuses_impossible_lengths_and_stray_bits() {
        assert_eq!(base64url_decode(b"A"), None);
        assert_eq!(base64url_decode(b"AB"), None, "stray low bits");
        assert_eq!(base64url_decode(b"AQ"), Some(vec![1]));
        assert_eq!(base64url_decode(b"AAB"), None);
        assert_eq!(base64url_decode(b"AAE"), Some(vec![0, 1]));
    }

    #[test]
    fn refuses_huge_tokens_without_decoding_them() {
        let huge = "a.".to_owned() + &"A".repeat(MAX_TOKEN_LEN) + ".c";
        assert_eq!(decode_payload(&huge), Err(JwtError::TooLarge));
    }
}
