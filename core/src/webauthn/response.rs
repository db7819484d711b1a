//! Parsing the browser's JSON: the entry point for untrusted input (fuzzed
//! by `fuzz/fuzz_targets/webauthn_response.rs`).
//!
//! Both functions take the body as the browser sent it — the JSON of a
//! `PublicKeyCredential` (`RegistrationResponseJSON` /
//! `AuthenticationResponseJSON`) — and check only its shape: sizes and
//! base64url fields. CBOR, COSE and signatures are checked later, when the
//! ceremony verifies it. Anything that does not parse is a
//! `VALIDATION_FAILED` naming `response`.

use crate::error::ValidationError;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

/// Largest response body accepted (64 KiB): far above any real
/// attestation, small enough that parsing a hostile body is cheap.
pub const MAX_RESPONSE_LEN: usize = 64 * 1024;

fn check_size(json: &str) -> Result<(), ValidationError> {
    if json.len() > MAX_RESPONSE_LEN {
        return Err(ValidationError::new(
            "response",
            format!("at most {MAX_RESPONSE_LEN} bytes"),
        ));
    }
    Ok(())
}

fn check_id(raw_id: &[u8]) -> Result<(), ValidationError> {
    super::CredentialId::from_bytes(raw_id.to_vec())
        .map(|_| ())
        .map_err(|e| ValidationError::new("response.rawId", e.problem))
}

/// Parse a registration response (`navigator.credentials.create()`'s
/// result as JSON).
pub fn parse_registration_response(
    json: &str,
) -> Result<RegisterPublicKeyCredential, ValidationError> {
    check_size(json)?;
    let parsed: RegisterPublicKeyCredential = serde_json::from_str(json).map_err(|e| {
        ValidationError::new("response", format!("not a registration response: {e}"))
    })?;
    check_id(parsed.raw_id.as_ref())?;
    Ok(parsed)
}

/// Parse an authentication response (`navigator.credentials.get()`'s
/// result as JSON).
pub fn parse_authentication_response(json: &str) -> Result<PublicKeyCredential, ValidationError> {
    check_size(json)?;
    let parsed: PublicKeyCredential = serde_json::from_str(json).map_err(|e| {
        ValidationError::new("response", format!("not an authentication response: {e}"))
    })?;
    check_id(parsed.raw_id.as_ref())?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bodies_are_validation_errors() {
        for bad in [
            "",
            "null",
            "{}",
            "[]",
            r#"{"id":"AA","rawId":"!!","type":"public-key","response":{}}"#,
            r#"{"id":"","rawId":"","type":"public-key","response":{"authenticatorData":"","clientDataJSON":"","signature":""},"extensions":{}}"#,
        ] {
            assert_eq!(
                parse_authentication_response(bad)
                    .unwrap_err()
                    .field
                    .split('.')
                    .next(),
                Some("response"),
                "{bad:?}"
            );
            assert!(parse_registration_response(bad).is_err(), "{bad:?}");
        }
        let huge = format!("\"{}\"", "a".repeat(MAX_RESPONSE_LEN));
        assert_eq!(
            parse_authentication_response(&huge).unwrap_err().field,
            "response"
        );
    }

    #[test]
    fn well_formed_assertion_parses() {
        let json = r#"{"id":"AQID","rawId":"AQID","type":"public-key","response":{"authenticatorData":"AA","clientDataJSON":"e30","signature":"AA","userHandle":null},"extensions":{}}"#;
        let parsed = parse_authentication_response(json).unwrap();
        assert_eq!(parsed.raw_id.as_ref(), &[1, 2, 3]);
    }
}
