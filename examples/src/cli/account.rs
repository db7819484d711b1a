//! `login`, `token show` and `totp enroll|activate`: the user side, on the
//! realm token endpoint (seed 003) and the MFA-key endpoints (seed 001).

use super::{Cli, CliError, files, send};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keystead::secret::SecretString;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The saved login.
#[derive(Serialize, Deserialize)]
pub struct Session {
    /// The access token (JWS).
    #[serde(with = "secret_string")]
    pub access_token: SecretString,
    /// The refresh token, if the server gave one.
    #[serde(default, with = "opt_secret_string")]
    pub refresh_token: Option<SecretString>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session([redacted])")
    }
}

mod secret_string {
    use keystead::secret::SecretString;
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose())
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        Ok(SecretString::new(String::deserialize(d)?))
    }
}

mod opt_secret_string {
    use keystead::secret::SecretString;
    use serde::{Deserialize, Deserializer, Serializer};
    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
    pub(super) fn serialize<S: Serializer>(
        v: &Option<SecretString>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v.expose()),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SecretString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretString::new))
    }
}

/// What `token show` prints: the saved token's claims, decoded *without*
/// verification (the server verifies; this is for the user's eyes).
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// The claims.
    pub claims: Value,
    /// Seconds until `exp` (negative once expired).
    pub expires_in: i64,
}

/// A new TOTP key: what `totp enroll` prints.
#[derive(Debug, Clone)]
pub struct TotpEnrollment {
    /// The key's id, to activate it.
    pub key_id: String,
    /// The `otpauth://` URI for authenticator apps.
    pub otpauth: String,
    /// The URI as a QR code of Unicode half blocks, for the terminal.
    pub qr: String,
}

impl Cli {
    fn session_path(&self) -> std::path::PathBuf {
        self.home.join("session.json")
    }

    /// The saved login, or a usage error asking to log in.
    pub fn session(&self) -> Result<Session, CliError> {
        let bytes = files::read(&self.session_path())?
            .ok_or_else(|| CliError::Usage("not logged in: run `login` first".into()))?;
        let bytes = zeroize::Zeroizing::new(bytes);
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Usage(format!("session.json is unreadable: {e}")))
    }

    /// Save a login (0600).
    pub fn save_session(&self, session: &Session) -> Result<(), CliError> {
        let bytes = zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(session)
                .map_err(|e| CliError::Usage(format!("session: {e}")))?,
        );
        files::write_private(&self.session_path(), &bytes)
    }

    /// Log in with a password at the realm's token endpoint (OAuth password
    /// grant, seed 003) and save the tokens.
    pub async fn login(
        &self,
        realm: &str,
        username: &str,
        password: &SecretString,
        client_id: &str,
    ) -> Result<Session, CliError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            refresh_token: Option<String>,
        }
        let form = [
            ("grant_type", "password"),
            ("username", username),
            ("password", password.expose()),
            ("client_id", client_id),
        ];
        let answer: TokenResponse = send(
            self.http
                .post(self.url(&format!("/realms/{realm}/protocol/openid-connect/token")))
                .form(&form),
        )
        .await?;
        let session = Session {
            access_token: SecretString::new(answer.access_token),
            refresh_token: answer.refresh_token.map(SecretString::new),
        };
        self.save_session(&session)?;
        Ok(session)
    }

    /// The saved access token's claims (unverified) and time left.
    pub fn token_show(&self) -> Result<TokenInfo, CliError> {
        let session = self.session()?;
        let payload = session
            .access_token
            .expose()
            .split('.')
            .nth(1)
            .ok_or_else(|| CliError::Usage("the saved token is not a JWS".into()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CliError::Usage("the saved token's payload is not base64url".into()))?;
        let claims: Value = serde_json::from_slice(&bytes)
            .map_err(|_| CliError::Usage("the saved token's payload is not JSON".into()))?;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok(TokenInfo {
            expires_in: exp - chrono::Utc::now().timestamp(),
            claims,
        })
    }

    /// Create a TOTP key (seed 001 `POST /api/v1/user/mfa`, pending until
    /// activated) and render its `otpauth` URI as a terminal QR code.
    pub async fn totp_enroll(
        &self,
        password: &SecretString,
        type_id: u32,
    ) -> Result<TotpEnrollment, CliError> {
        let answer: Value = send(
            self.authed(Method::POST, "/api/v1/user/mfa")?
                .json(&json!({"type": {"id": type_id}, "password": password.expose()})),
        )
        .await?;
        let otpauth = answer
            .get("otpauth")
            .and_then(Value::as_str)
            .ok_or_else(|| CliError::Usage("the server's answer has no otpauth URI".into()))?
            .to_owned();
        let key_id = match answer.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Ok(TotpEnrollment {
            key_id,
            qr: qr_code(&otpauth)?,
            otpauth,
        })
    }

    /// Activate a pending TOTP key with a code from the authenticator
    /// (seed 001 `PATCH /api/v1/user/mfa/{key_id}`).
    pub async fn totp_activate(&self, key_id: &str, code: &str) -> Result<(), CliError> {
        let _: Value = send(
            self.authed(Method::PATCH, &format!("/api/v1/user/mfa/{key_id}"))?
                .json(&json!({"status": {"id": 1}, "code": code})),
        )
        .await?;
        Ok(())
    }
}

/// `text` as a QR code drawn with Unicode half blocks (two modules per
/// character cell), dark on light.
pub fn qr_code(text: &str) -> Result<String, CliError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| CliError::Usage(format!("cannot encode a QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_codes_render_as_half_blocks() {
        let qr = qr_code("otpauth://totp/acme:alice?secret=JBSWY3DPEHPK3PXP&issuer=acme").unwrap();
        assert!(qr.lines().count() > 10);
        assert!(qr.chars().any(|c| c == '▀' || c == '▄' || c == '█'));
    }

    #[test]
    fn sessions_round_trip_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::new("http://127.0.0.1:1", dir.path()).unwrap();
        assert!(matches!(cli.session(), Err(CliError::Usage(_))));
        // header.payload.signature with {"sub":"u","exp":<far future>}
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"u","exp":4102444800}"#);
        cli.save_session(&Session {
            access_token: SecretString::new(format!("e30.{payload}.c2ln")),
            refresh_token: None,
        })
        .unwrap();
        let info = cli.token_show().unwrap();
        assert_eq!(info.claims["sub"], "u");
        assert!(info.expires_in > 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("session.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            format!("{:?}", cli.session().unwrap()),
            "Session([redacted])"
        );
    }

    #[test]
    fn bad_server_urls_are_refused() {
        assert!(Cli::new("ftp://x", "/tmp").is_err());
        assert!(Cli::new("localhost:8080", "/tmp").is_err());
    }
}
