//! A realm's relying party: the rp id, its display name, the origins
//! browsers may run the ceremonies from, and the passwordless policy.

use super::CEREMONY_TTL_SECS;
use crate::error::ValidationError;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::Url;

/// Longest relying-party id (a DNS name).
pub const MAX_RP_ID_LEN: usize = 253;
/// Longest relying-party display name, in characters.
pub const MAX_RP_NAME_CHARS: usize = 64;
/// Most origins one relying party may allow.
pub const MAX_ORIGINS: usize = 8;

/// A realm's WebAuthn relying party; set with
/// [`Webauthn::configure`](super::Webauthn::configure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelyingParty {
    /// The rp id: the registrable domain credentials are scoped to
    /// (`example.com`), lower-case. Credentials made for one rp id never
    /// work for another, so changing it orphans every registered passkey.
    pub id: String,
    /// The name authenticators show when a credential is created.
    pub name: String,
    /// The origins ceremonies may run from (`https://login.example.com`;
    /// `http://` only for `localhost`). Each host must be the rp id or a
    /// subdomain of it. Compared exactly, port included.
    pub origins: Vec<String>,
    /// Whether a passkey alone may log a user in
    /// ([`Webauthn::authenticate`](super::Webauthn::authenticate)); when
    /// `false` passkeys only serve as a second factor.
    pub passwordless: bool,
}

impl RelyingParty {
    /// A relying party with one origin, passwordless login off.
    pub fn new(id: impl Into<String>, name: impl Into<String>, origin: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            origins: vec![origin.into()],
            passwordless: false,
        }
    }

    /// Check the documented rules; the error names the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_rp_id(&self.id)?;
        let name_chars = self.name.chars().count();
        if name_chars == 0
            || name_chars > MAX_RP_NAME_CHARS
            || self.name.chars().any(char::is_control)
        {
            return Err(ValidationError::new(
                "relying_party.name",
                format!("1 to {MAX_RP_NAME_CHARS} characters, no control characters"),
            ));
        }
        if self.origins.is_empty() || self.origins.len() > MAX_ORIGINS {
            return Err(ValidationError::new(
                "relying_party.origins",
                format!("1 to {MAX_ORIGINS} origins"),
            ));
        }
        for origin in &self.origins {
            parse_origin(&self.id, origin)?;
        }
        self.build().map(|_| ())
    }

    /// The webauthn-rs relying party for this configuration.
    pub(crate) fn build(&self) -> Result<webauthn_rs::Webauthn, ValidationError> {
        let origins = self
            .origins
            .iter()
            .map(|o| parse_origin(&self.id, o))
            .collect::<Result<Vec<_>, _>>()?;
        let Some((first, rest)) = origins.split_first() else {
            return Err(ValidationError::new(
                "relying_party.origins",
                "at least one origin",
            ));
        };
        let timeout = std::time::Duration::from_secs(CEREMONY_TTL_SECS.unsigned_abs());
        let mut builder = webauthn_rs::WebauthnBuilder::new(&self.id, first)
            .map_err(|e| ValidationError::new("relying_party.origins", e.to_string()))?
            .rp_name(&self.name)
            .timeout(timeout);
        for origin in rest {
            builder = builder.append_allowed_origin(origin);
        }
        builder
            .build()
            .map_err(|e| ValidationError::new("relying_party", e.to_string()))
    }
}

/// A lower-case DNS name of letter-digit-hyphen labels, or `localhost`.
fn validate_rp_id(id: &str) -> Result<(), ValidationError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if id.is_empty() || id.len() > MAX_RP_ID_LEN || !id.split('.').all(label_ok) {
        return Err(ValidationError::new(
            "relying_party.id",
            "a lower-case DNS name (labels of a-z, 0-9 and '-')",
        ));
    }
    Ok(())
}

/// An origin URL whose host is `rp_id` or a subdomain of it: `https://`, or
/// `http://` for `localhost`; no path, query, fragment or credentials.
fn parse_origin(rp_id: &str, origin: &str) -> Result<Url, ValidationError> {
    let bad = |why: &str| {
        ValidationError::new(
            "relying_party.origins",
            format!("{origin:?}: {why} (an https:// origin on the rp id or a subdomain of it)"),
        )
    };
    let url = Url::parse(origin).map_err(|_| bad("not a URL"))?;
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && host == "localhost");
    if !scheme_ok {
        return Err(bad("scheme must be https (http only for localhost)"));
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad("an origin has no path, query, fragment or credentials"));
    }
    if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
        return Err(bad("host is not the rp id or a subdomain of it"));
    }
    Ok(url)
}

/// How a relying party is stored. Never change a released variant: add `V2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RelyingPartyRecord {
    V1(RelyingParty),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_relying_parties() {
        RelyingParty::new("example.com", "Example", "https://example.com")
            .validate()
            .unwrap();
        RelyingParty::new("example.com", "Example", "https://login.example.com:8443")
            .validate()
            .unwrap();
        RelyingParty::new("localhost", "Dev", "http://localhost:8080")
            .validate()
            .unwrap();
        let mut two = RelyingParty::new("example.com", "Example", "https://a.example.com");
        two.origins.push("https://b.example.com".into());
        two.build().unwrap();
    }

    #[test]
    fn invalid_relying_parties_name_the_field() {
        let field = |rp: RelyingParty| rp.validate().unwrap_err().field;
        for id in ["", "Example.com", "-a.com", "a..com", "exa mple.com"] {
            assert_eq!(
                field(RelyingParty::new(id, "x", "https://example.com")),
                "relying_party.id",
                "{id:?}"
            );
        }
        assert_eq!(
            field(RelyingParty::new("example.com", "", "https://example.com")),
            "relying_party.name"
        );
        for origin in [
            "http://example.com",
            "https://evil.com",
            "https://notexample.com",
            "https://example.com/path",
            "https://example.com/?q",
            "https://u:p@example.com",
            "example.com",
            "ftp://example.com",
        ] {
            assert_eq!(
                field(RelyingParty::new("example.com", "x", origin)),
                "relying_party.origins",
                "{origin:?}"
            );
        }
        let mut none = RelyingParty::new("example.com", "x", "https://example.com");
        none.origins.clear();
        assert_eq!(field(none), "relying_party.origins");
    }

    #[test]
    fn record_golden_bytes() {
        let record = RelyingPartyRecord::V1(RelyingParty {
            id: "example.com".into(),
            name: "Example".into(),
            origins: vec!["https://login.example.com".into()],
            passwordless: true,
        });
        crate::store::record::assert_golden(
            &record,
            "01000b6578616d706c652e636f6d074578616d706c65011968747470733a2f2f6c6f67696e2e6578616d706c652e636f6d01",
        );
    }
}
