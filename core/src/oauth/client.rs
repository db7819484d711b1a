//! OAuth clients of a realm: registration, secrets, redirect URIs.
//!
//! * **Kinds.** A [`ClientKind::Public`] client (a browser or native app)
//!   cannot keep a secret: it has none and must use PKCE. A
//!   [`ClientKind::Confidential`] client gets a secret (`kscs_…`, 256
//!   random bits) once, at creation or [`OAuth::rotate_client_secret`]; only
//!   its SHA-256 digest is stored and a presented secret is compared in
//!   constant time. [`OAuth::client_secret_basic`] and
//!   [`OAuth::client_secret_post`] authenticate it from the values a
//!   front-end parsed out of the `Authorization: Basic` header or the form.
//! * **Redirect URIs** are matched byte for byte (RFC 9700 §4.1.3): no
//!   wildcards, no prefix matching, no normalisation — a trailing slash,
//!   another port, scheme, host case or path is another URI. Registration
//!   ([`validate_redirect_uri`]) parses with the `url` crate's WHATWG URL
//!   parser, the one browsers follow, and refuses what can't be matched
//!   safely: fragments (RFC 6749 §3.1.2), userinfo (`https://good@evil`),
//!   `*`, `.` and `..` segments (also as `%2e`), malformed `%` escapes,
//!   upper-case scheme or host, non-ASCII (IDNA hosts register in punycode),
//!   tabs, newlines, backslashes, port 0, and `http://` except to `localhost`,
//!   `127.0.0.1` and `[::1]` (RFC 8252 §7.3). Native apps may use a
//!   private-use scheme in reverse-domain form (`com.example.app:/cb`,
//!   RFC 8252 §7.1); only public clients may.
//! * **Canonical form.** Since matching is byte for byte, a registered URI
//!   must be what the parser serialises it to (`Url::parse(uri).as_str()`),
//!   or the URI we checked would differ from the one a browser follows
//!   (`http://0x7f000001` is `127.0.0.1`, `%2e%2e` climbs, IDNA hosts turn
//!   to punycode, a default port disappears). Two rewrites are let through
//!   as harmless, since the browser goes to the same place: the `/` of an
//!   empty http(s) path (`https://app.example`) and an explicit default
//!   port (`https://app.example:443/cb`); such a URI still matches only
//!   as registered.
//! * **Grants and scopes.** A client lists the grant types it may use and
//!   the scope values it may ask for; anything else is refused
//!   (`unauthorized_client`, `invalid_scope`).
//! * **Deletion** removes the record and expires every token issued to the
//!   client up to now ([`Tokens::expire_all_for_client`](crate::token::Tokens::expire_all_for_client)),
//!   so access and refresh tokens die with it; its pending codes fail at
//!   redemption (`invalid_client`).

use super::{Bearer, MAX_REDIRECT_URI_LEN, MAX_REDIRECT_URIS, OAuth, OAuthError, layout};
use crate::error::{Error, ValidationError};
use crate::id::RealmId;
use crate::keystead::MAX_RETRIES;
use crate::page::Page;
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};
use url::{Host, ParseError, Position, Url};

/// Longest `client_id`, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// Most entries in [`Client::resources`] or [`Client::subject_audiences`].
pub const MAX_AUDIENCES: usize = 32;
/// Longest access-token lifetime a client may override to: 24 hours, the
/// realm-wide bound too.
pub const MAX_ACCESS_TOKEN_SECS: u32 = 24 * 3600;

/// Whether a client can keep a secret (RFC 6749 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// A browser or native app: no secret, PKCE required.
    Public,
    /// A server-side app: authenticates with its secret.
    Confidential,
}

/// The grant types a client may use at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GrantType {
    /// The authorization-code flow (RFC 6749 §4.1).
    AuthorizationCode,
    /// Refresh tokens from the code flow (RFC 6749 §6).
    RefreshToken,
    /// Tokens for the client itself (RFC 6749 §4.4); confidential clients
    /// only.
    ClientCredentials,
    /// Direct login at the client's own front-end: the resource-owner
    /// password grant (RFC 6749 §4.3) and every login that ends in
    /// [`Tokens::issue`](crate::token::Tokens::issue) — password with a
    /// second factor, passkey, magic link. Only first-party clients
    /// should be allowed it: the client sees the user's credentials.
    Password,
    /// RFC 8693 token exchange; confidential clients only (the exchange
    /// must authenticate who asks). Which subject tokens the client may
    /// present is [`Client::subject_audiences`].
    TokenExchange,
}

impl GrantType {
    /// The `grant_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
            GrantType::TokenExchange => crate::token::grants::GRANT_TOKEN_EXCHANGE,
        }
    }
}

/// An OAuth client as callers see it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The `client_id`, unique in the realm.
    pub client_id: String,
    /// The realm.
    pub realm: RealmId,
    /// Public or confidential.
    pub kind: ClientKind,
    /// The redirect URIs an authorization request may name, exactly.
    pub redirect_uris: Vec<String>,
    /// The grant types the client may use.
    pub grant_types: Vec<GrantType>,
    /// The scope values the client may ask for.
    pub scopes: Vec<String>,
    /// The `aud` of the access tokens issued to the client.
    pub audience: String,
    /// Access-token lifetime for this client; the realm's when `None`.
    pub access_token_secs: Option<u32>,
    /// Whether authorization requests must carry a PKCE challenge (always
    /// for public clients).
    pub require_pkce: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When its settings or secret last changed.
    pub updated_at: DateTime<Utc>,
    /// Further audiences its tokens may be for, besides `audience`, asked
    /// for with an RFC 8707 `resource` (or token exchange's `audience`).
    pub resources: Vec<String>,
    /// Token exchange: the audiences of subject tokens this client may
    /// present, besides tokens issued to itself (RFC 8693 §2.1 leaves the
    /// rule to the server; keystead makes it per client and explicit).
    pub subject_audiences: Vec<String>,
}

impl Client {
    /// Whether the client may use `grant`.
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// Whether its tokens may be for `audience`: its own `audience` or one
    /// of its `resources`.
    pub fn may_target(&self, audience: &str) -> bool {
        self.audience == audience || self.resources.iter().any(|r| r == audience)
    }
}

/// What to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClient {
    /// The `client_id`: 1 to [`MAX_CLIENT_ID_LEN`] of `A-Z a-z 0-9 . _ ~ : -`.
    pub client_id: String,
    /// Public or confidential.
    pub kind: ClientKind,
    /// Exact redirect URIs (1 to [`MAX_REDIRECT_URIS`] when the client uses
    /// the code flow); see [`validate_redirect_uri`].
    pub redirect_uris: Vec<String>,
    /// The grant types it may use (at least one).
    pub grant_types: Vec<GrantType>,
    /// The scope values it may ask for.
    pub scopes: Vec<String>,
    /// The `aud` of its access tokens; the `client_id` when `None`.
    pub audience: Option<String>,
    /// Its access-token lifetime (1 s to 24 h); the realm's when `None`.
    pub access_token_secs: Option<u32>,
    /// Whether PKCE is required; must be `true` for public clients.
    pub require_pkce: bool,
    /// Further audiences it may ask for ([`Client::resources`]).
    pub resources: Vec<String>,
    /// Subject-token audiences it may exchange ([`Client::subject_audiences`]).
    pub subject_audiences: Vec<String>,
}

impl NewClient {
    /// A public client using the code flow with refresh tokens, PKCE
    /// required, allowed `openid`.
    pub fn public(client_id: impl Into<String>, redirect_uri: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            kind: ClientKind::Public,
            redirect_uris: vec![redirect_uri.into()],
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            scopes: vec![super::SCOPE_OPENID.to_owned()],
            audience: None,
            access_token_secs: None,
            require_pkce: true,
            resources: Vec::new(),
            subject_audiences: Vec::new(),
        }
    }

    /// A first-party public client whose own front-end logs users in
    /// ([`GrantType::Password`] and refresh tokens; no redirect URIs), its
    /// tokens for `audience` with at most `scopes`.
    pub fn first_party(
        client_id: impl Into<String>,
        audience: impl Into<String>,
        scopes: Vec<String>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            kind: ClientKind::Public,
            redirect_uris: Vec::new(),
            grant_types: vec![GrantType::Password, GrantType::RefreshToken],
            scopes,
            audience: Some(audience.into()),
            access_token_secs: None,
            require_pkce: true,
            resources: Vec::new(),
            subject_audiences: Vec::new(),
        }
    }

    /// A confidential client using the code flow with refresh tokens, PKCE
    /// required, allowed `openid`.
    pub fn confidential(client_id: impl Into<String>, redirect_uri: impl Into<String>) -> Self {
        Self {
            kind: ClientKind::Confidential,
            ..Self::public(client_id, redirect_uri)
        }
    }

    /// A confidential client that only uses the client-credentials grant.
    pub fn service(client_id: impl Into<String>, scopes: Vec<String>) -> Self {
        Self {
            client_id: client_id.into(),
            kind: ClientKind::Confidential,
            redirect_uris: Vec::new(),
            grant_types: vec![GrantType::ClientCredentials],
            scopes,
            audience: None,
            access_token_secs: None,
            require_pkce: true,
            resources: Vec::new(),
            subject_audiences: Vec::new(),
        }
    }
}

/// A registered client and, for a confidential one, its secret — shown
/// this once, never stored.
#[derive(Debug)]
pub struct NewClientSecret {
    /// The client.
    pub client: Client,
    /// The secret (`kscs_…`) of a confidential client.
    pub secret: Option<SecretString>,
}

/// A change to a client; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientUpdate {
    /// New redirect URIs.
    pub redirect_uris: Option<Vec<String>>,
    /// New grant types.
    pub grant_types: Option<Vec<GrantType>>,
    /// New scope values.
    pub scopes: Option<Vec<String>>,
    /// New audience.
    pub audience: Option<String>,
    /// `Some(None)` returns to the realm's lifetime.
    pub access_token_secs: Option<Option<u32>>,
    /// Whether PKCE is required (confidential clients only may turn it off).
    pub require_pkce: Option<bool>,
    /// New further audiences.
    pub resources: Option<Vec<String>>,
    /// New subject-token audiences for token exchange.
    pub subject_audiences: Option<Vec<String>>,
}

/// A client as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredClient {
    pub(crate) client: Client,
    /// SHA-256 of the secret of a confidential client.
    pub(crate) secret_digest: Option<[u8; 32]>,
}

/// How a client is stored. Never change a released variant: add a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ClientRecord {
    /// Before resource indicators and token-exchange settings.
    V1(legacy::StoredClientV1),
    /// Current.
    V2(StoredClient),
}

impl ClientRecord {
    /// The client, whatever version it was stored as.
    pub(crate) fn into_stored(self) -> StoredClient {
        match self {
            ClientRecord::V1(old) => old.upgrade(),
            ClientRecord::V2(current) => current,
        }
    }
}

/// The client in a `get_many` slot read at `key`, decoded once per
/// distinct bytes (a refresh and an issue read it on every call).
pub(crate) fn client_in(
    records: &crate::store::decoded::Decoded,
    key: &crate::store::key::Key,
    slot: Option<&crate::store::Versioned>,
) -> Result<Option<(std::sync::Arc<StoredClient>, u64)>, StorageError> {
    slot.map(|stored| {
        records
            .get_or_decode(key.as_bytes(), &stored.value, |bytes| {
                decode_client(key.as_bytes(), bytes)
            })
            .map(|client| (client, stored.version))
    })
    .transpose()
}

/// Decode a stored client record of any version.
pub(crate) fn decode_client(key: &[u8], bytes: &[u8]) -> Result<StoredClient, StorageError> {
    record::decode::<ClientRecord>(key, bytes).map(ClientRecord::into_stored)
}

/// Released record shapes, kept so old data decodes (postcard is
/// positional: a field added to a stored struct breaks every old record).
pub(crate) mod legacy {
    use super::{Client, ClientKind, GrantType, StoredClient};
    use crate::id::RealmId;
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Serialize};

    /// `StoredClient` as `ClientRecord::V1` stored it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub(crate) struct StoredClientV1 {
        pub(crate) client: ClientV1,
        pub(crate) secret_digest: Option<[u8; 32]>,
    }

    /// `Client` without `resources` and `subject_audiences`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub(crate) struct ClientV1 {
        pub(crate) client_id: String,
        pub(crate) realm: RealmId,
        pub(crate) kind: ClientKind,
        pub(crate) redirect_uris: Vec<String>,
        pub(crate) grant_types: Vec<GrantType>,
        pub(crate) scopes: Vec<String>,
        pub(crate) audience: String,
        pub(crate) access_token_secs: Option<u32>,
        pub(crate) require_pkce: bool,
        pub(crate) created_at: DateTime<Utc>,
        pub(crate) updated_at: DateTime<Utc>,
    }

    impl StoredClientV1 {
        pub(crate) fn upgrade(self) -> StoredClient {
            let c = self.client;
            StoredClient {
                client: Client {
                    client_id: c.client_id,
                    realm: c.realm,
                    kind: c.kind,
                    redirect_uris: c.redirect_uris,
                    grant_types: c.grant_types,
                    scopes: c.scopes,
                    audience: c.audience,
                    access_token_secs: c.access_token_secs,
                    require_pkce: c.require_pkce,
                    created_at: c.created_at,
                    updated_at: c.updated_at,
                    resources: Vec::new(),
                    subject_audiences: Vec::new(),
                },
                secret_digest: self.secret_digest,
            }
        }
    }
}

/// Check a `client_id`: 1 to [`MAX_CLIENT_ID_LEN`] of `A-Z a-z 0-9 . _ ~ : -`
/// (safe in URLs, forms and Basic credentials without escaping).
pub fn validate_client_id(client_id: &str) -> Result<(), ValidationError> {
    let ok = !client_id.is_empty()
        && client_id.len() <= MAX_CLIENT_ID_LEN
        && client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "client_id",
            format!("1 to {MAX_CLIENT_ID_LEN} characters of A-Z a-z 0-9 . _ ~ : -"),
        ))
    }
}

/// Check a redirect URI for registration; see the [module docs](self).
/// Returns whether it uses a private-use (native app) scheme.
pub fn validate_redirect_uri(uri: &str) -> Result<bool, ValidationError> {
    let bad = |problem: &str| ValidationError::new("redirect_uris", problem.to_owned());
    if uri.is_empty() || uri.len() > MAX_REDIRECT_URI_LEN {
        return Err(bad("1 to 2048 bytes"));
    }
    check_text(uri).map_err(bad)?;
    let url = Url::parse(uri).map_err(|e| match e {
        ParseError::RelativeUrlWithoutBase => bad("no scheme"),
        ParseError::InvalidPort => bad("a port of 1 to 65535 without leading zeros"),
        ParseError::InvalidIpv4Address | ParseError::InvalidIpv6Address => {
            bad("a malformed IP literal (and no IPv6 zone)")
        }
        ParseError::EmptyHost => bad("http(s) URIs need a host"),
        ParseError::IdnaError | ParseError::InvalidDomainCharacter => {
            bad("a lower-case host name or IP literal")
        }
        e => ValidationError::new("redirect_uris", format!("not a URL: {e}")),
    })?;
    let scheme = url.scheme();
    if !uri.starts_with(scheme) {
        return Err(bad("a lower-case scheme"));
    }
    let private_use = match scheme {
        "https" | "http" => {
            let Some(rest) = uri[scheme.len()..].strip_prefix("://") else {
                return Err(bad("http(s) URIs take the form scheme://host/path"));
            };
            if rest.is_empty() || rest.starts_with(['/', '?']) {
                return Err(bad("http(s) URIs need a host"));
            }
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            if authority.contains('@') || !url.username().is_empty() || url.password().is_some() {
                return Err(bad("no userinfo in the authority"));
            }
            check_host(&url, rest).map_err(bad)?;
            if url.port() == Some(0) {
                return Err(bad("a port of 1 to 65535 without leading zeros"));
            }
            let loopback = match url.host() {
                Some(Host::Domain(name)) => name == "localhost",
                Some(Host::Ipv4(ip)) => ip == Ipv4Addr::LOCALHOST,
                Some(Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
                None => false,
            };
            if scheme == "http" && !loopback {
                return Err(bad("http:// only to loopback hosts (RFC 8252 §7.3)"));
            }
            false
        }
        _ if scheme.contains('.') => {
            // RFC 8252 §7.1: `com.example.app:/path`, no authority.
            let rest = &uri[scheme.len() + 1..];
            if !rest.starts_with('/') || rest.starts_with("//") || url.host().is_some() {
                return Err(bad("a private-use scheme takes the form scheme:/path"));
            }
            true
        }
        _ => {
            return Err(bad(
                "https://, http:// to a loopback host, or a reverse-domain private-use scheme",
            ));
        }
    };
    if !is_canonical(&url, uri) {
        return Err(ValidationError::new(
            "redirect_uris",
            format!(
                "not in canonical form: the WHATWG URL parser reads it as {}",
                url.as_str()
            ),
        ));
    }
    Ok(private_use)
}

/// What can be told about a redirect URI from its text alone, before
/// parsing: first what the WHATWG parser would silently strip or rewrite,
/// by name (the canonical-form check catches the rest), then the rules the
/// parser has no opinion on.
fn check_text(uri: &str) -> Result<(), &'static str> {
    if uri.contains(['\t', '\n', '\r']) {
        return Err("contains a tab or newline (the WHATWG URL parser strips them)");
    }
    if uri.contains('\\') {
        return Err("contains a backslash (the WHATWG URL parser reads it as '/')");
    }
    if !uri.is_ascii() {
        // The parser maps a non-ASCII host to punycode (IDNA): then the
        // host it reads is not where the input has it.
        let idna = Url::parse(uri).ok().is_some_and(|url| {
            url.host_str()
                .is_some_and(|host| !after_scheme(uri, &url).starts_with(host))
        });
        return Err(if idna {
            "host is not ASCII (IDNA): register its punycode (xn--) form"
        } else {
            "visible ASCII only (percent-encode the rest)"
        });
    }
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("visible ASCII only (percent-encode the rest)");
    }
    if uri.contains('#') {
        return Err("no fragment (RFC 6749 §3.1.2)");
    }
    if uri.contains('*') {
        return Err("no wildcards: redirect URIs match exactly");
    }
    check_percent(uri)?;
    let before_query = uri.split_once('?').map_or(uri, |(p, _)| p);
    for segment in before_query.split('/') {
        if matches!(segment, "." | "..") {
            return Err("no '.' or '..' path segments");
        }
        // WHATWG reads these as '.' and '..' too.
        let lower = segment.to_ascii_lowercase();
        if matches!(lower.as_str(), "%2e" | ".%2e" | "%2e." | "%2e%2e") {
            return Err("no percent-encoded '.' or '..' path segments (%2e)");
        }
    }
    Ok(())
}

/// `uri` after its scheme and `://` (or `:`), as written.
fn after_scheme<'a>(uri: &'a str, url: &Url) -> &'a str {
    let rest = uri.get(url.scheme().len()..).unwrap_or_default();
    rest.strip_prefix("://")
        .or_else(|| rest.strip_prefix(':'))
        .unwrap_or(rest)
}

/// The host of an http(s) redirect URI, `rest` being the input after
/// `://`: written as the parser serialises it (lower case, IPv4 in dotted
/// decimal, IPv6 compressed), and a name is dot-separated labels of `a-z
/// 0-9 -` without a leading or trailing `-` (no empty label, so no
/// trailing dot).
fn check_host(url: &Url, rest: &str) -> Result<(), &'static str> {
    let host = url.host_str().unwrap_or_default();
    if !rest.starts_with(host) {
        let same_but_case = rest
            .get(..host.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(host));
        return Err(if same_but_case {
            "a lower-case host"
        } else {
            "a host in canonical form (no escapes, IPv4 in dotted decimal, IPv6 compressed \
             lower-case)"
        });
    }
    if let Some(Host::Domain(name)) = url.host() {
        let ok = name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if !ok {
            return Err("a lower-case host name or IP literal");
        }
    }
    Ok(())
}

/// Whether `uri` is exactly how the WHATWG parser serialises `url`, up to
/// two rewrites that change nothing about where a browser goes: the `/` the
/// parser gives an empty http(s) path (`https://app.example` reads as
/// `https://app.example/`) and the default port it drops (`:443` for
/// https, `:80` for http). Matching stays byte for byte against what was
/// registered, so these only mean a client must send the form it
/// registered; anything else the parser rewrites (case, escapes, IPv4
/// forms, dot segments, …) would make the URI we check differ from the
/// one a browser follows, and is refused.
fn is_canonical(url: &Url, uri: &str) -> bool {
    let serialised = url.as_str();
    if serialised == uri {
        return true;
    }
    if !matches!(url.scheme(), "https" | "http") {
        return false;
    }
    let head = &url[..Position::AfterHost];
    let port = &url[Position::AfterHost..Position::BeforePath];
    let default_port = url
        .port()
        .is_none()
        .then(|| url.port_or_known_default())
        .flatten()
        .map(|p| format!(":{p}"));
    let tail = &url[Position::BeforePath..];
    let no_path = (url.path() == "/").then(|| &url[Position::AfterPath..]);
    [Some(port.to_owned()), default_port]
        .iter()
        .flatten()
        .any(|port| {
            [Some(tail), no_path]
                .iter()
                .flatten()
                .any(|tail| format!("{head}{port}{tail}") == uri)
        })
}

/// Every `%` starts a `%XX` escape.
fn check_percent(part: &str) -> Result<(), &'static str> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err("'%' must start a %XX escape");
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Visible ASCII without spaces, 1 to 256 bytes (the token module's rule
/// for audiences).
fn check_audience(audience: &str) -> Result<(), ValidationError> {
    if audience.is_empty()
        || audience.len() > crate::token::MAX_CLIENT_ID_LEN
        || !audience.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ValidationError::new(
            "audience",
            "1 to 256 visible ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// Check a client's settings against every rule; called on create and
/// update before anything is written.
fn validate(client: &Client) -> Result<(), ValidationError> {
    validate_client_id(&client.client_id)?;
    if client.grant_types.is_empty() {
        return Err(ValidationError::new(
            "grant_types",
            "at least one grant type",
        ));
    }
    let public = client.kind == ClientKind::Public;
    if public && client.allows(GrantType::ClientCredentials) {
        return Err(ValidationError::new(
            "grant_types",
            "client_credentials is for confidential clients only",
        ));
    }
    if public && client.allows(GrantType::TokenExchange) {
        return Err(ValidationError::new(
            "grant_types",
            "token exchange is for confidential clients only (RFC 8693 §2.1: the exchange \
             authenticates the client)",
        ));
    }
    if client.allows(GrantType::RefreshToken)
        && !client.allows(GrantType::AuthorizationCode)
        && !client.allows(GrantType::Password)
    {
        return Err(ValidationError::new(
            "grant_types",
            "refresh_token comes with authorization_code or password",
        ));
    }
    if public && !client.require_pkce {
        return Err(ValidationError::new(
            "require_pkce",
            "public clients must use PKCE (RFC 9700 §2.1.1)",
        ));
    }
    if client.redirect_uris.len() > MAX_REDIRECT_URIS
        || (client.allows(GrantType::AuthorizationCode) && client.redirect_uris.is_empty())
    {
        return Err(ValidationError::new(
            "redirect_uris",
            format!("1 to {MAX_REDIRECT_URIS} for the authorization-code flow"),
        ));
    }
    for (i, uri) in client.redirect_uris.iter().enumerate() {
        if validate_redirect_uri(uri)? && !public {
            return Err(ValidationError::new(
                "redirect_uris",
                "private-use schemes are for public (native) clients",
            ));
        }
        if client.redirect_uris[..i].contains(uri) {
            return Err(ValidationError::new("redirect_uris", "listed twice"));
        }
    }
    crate::token::check_scope(&client.scopes)?;
    check_audience(&client.audience)?;
    for (field, list) in [
        ("resources", &client.resources),
        ("subject_audiences", &client.subject_audiences),
    ] {
        if list.len() > MAX_AUDIENCES {
            return Err(ValidationError::new(
                field,
                format!("at most {MAX_AUDIENCES} audiences"),
            ));
        }
        for audience in list {
            check_audience(audience).map_err(|e| ValidationError::new(field, e.problem))?;
        }
    }
    if let Some(secs) = client.access_token_secs
        && (secs == 0 || secs > MAX_ACCESS_TOKEN_SECS)
    {
        return Err(ValidationError::new(
            "access_token_secs",
            "1 second to 24 hours",
        ));
    }
    Ok(())
}

/// Remove duplicates, keeping the first of each.
fn dedup<T: PartialEq>(items: &mut Vec<T>) {
    let mut i = 0;
    while i < items.len() {
        if items[..i].contains(&items[i]) {
            items.remove(i);
        } else {
            i += 1;
        }
    }
}

/// Undo `application/x-www-form-urlencoded` (RFC 6749 §2.3.1 encodes the
/// Basic credentials so): `+` is a space, `%XX` a byte; the result must be
/// UTF-8. `None` if malformed. Public for front-ends that read the client
/// id out of `Authorization: Basic` themselves (to compare it with a form
/// field) before calling [`OAuth::authenticate_client`].
pub fn form_decode(value: &str) -> Option<String> {
    // Not `form_urlencoded::parse`: it splits on `&` and `=` (a Basic user
    // name or password is one value, and may hold either unencoded) and
    // decodes invalid UTF-8 lossily. `percent_decode` passes a malformed
    // escape (`%zz`, a lone `%`) through as is; the form encoding has no
    // such thing, so it is refused rather than guessed at.
    check_percent(value).ok()?;
    percent_encoding::percent_decode_str(&value.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

impl OAuth {
    /// The stored client `client_id` with its version, if any.
    pub(crate) async fn load_client(
        &self,
        client_id: &str,
    ) -> Result<Option<(StoredClient, u64)>, Error> {
        if validate_client_id(client_id).is_err() {
            return Ok(None);
        }
        let key = layout::client(self.realm, client_id);
        match self.ctx.store.get(key.as_bytes()).await? {
            None => Ok(None),
            Some(stored) => {
                let client = decode_client(key.as_bytes(), &stored.value)?;
                Ok(Some((client, stored.version)))
            }
        }
    }

    /// Register a client (validated first; nothing written if invalid). A
    /// confidential client's secret is in the answer, and only there.
    /// `OAUTH_CLIENT_EXISTS` if the id is taken.
    pub async fn create_client(&self, new: NewClient) -> Result<NewClientSecret, Error> {
        self.active_realm().await?;
        let now = self.now();
        let mut client = Client {
            audience: new.audience.unwrap_or_else(|| new.client_id.clone()),
            client_id: new.client_id,
            realm: self.realm,
            kind: new.kind,
            redirect_uris: new.redirect_uris,
            grant_types: new.grant_types,
            scopes: new.scopes,
            access_token_secs: new.access_token_secs,
            require_pkce: new.require_pkce,
            created_at: now,
            updated_at: now,
            resources: new.resources,
            subject_audiences: new.subject_audiences,
        };
        dedup(&mut client.grant_types);
        dedup(&mut client.scopes);
        dedup(&mut client.resources);
        dedup(&mut client.subject_audiences);
        validate(&client)?;
        let (secret, secret_digest) = match client.kind {
            ClientKind::Public => (None, None),
            ClientKind::Confidential => {
                let (secret, digest) = Bearer::ClientSecret.generate()?;
                (Some(secret), Some(digest))
            }
        };
        let key = layout::client(self.realm, &client.client_id);
        let stored = ClientRecord::V2(StoredClient {
            client: client.clone(),
            secret_digest,
        });
        let mut batch = Batch::new();
        batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &stored)?,
            Precondition::Absent,
        )?;
        match self.ctx.store.commit(batch).await {
            Ok(_) => Ok(NewClientSecret { client, secret }),
            Err(StorageError::Conflict { .. }) => Err(OAuthError::ClientExists.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// A client of this realm, or `OAUTH_CLIENT_NOT_FOUND`.
    pub async fn get_client(&self, client_id: &str) -> Result<Client, Error> {
        self.active_realm().await?;
        self.load_client(client_id)
            .await?
            .map(|(c, _)| c.client)
            .ok_or_else(|| OAuthError::ClientNotFound.into())
    }

    /// The realm's clients ordered by `client_id`, `limit` (1–1000) at a
    /// time; pass the previous page's `next` to continue.
    pub async fn list_clients(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<Client, String>, Error> {
        self.active_realm().await?;
        crate::page::scan_page(
            &*self.ctx.store,
            &layout::clients(self.realm),
            after.map(|id| layout::client(self.realm, id)),
            limit,
            |key, value| Ok(decode_client(key, value)?.client),
            |client| client.client_id.clone(),
        )
        .await
    }

    /// Change a client's settings (validated first; nothing written if
    /// invalid). Narrowing redirect URIs, grants or scopes applies to
    /// requests from now on; tokens already issued live on (use
    /// [`Tokens::expire_all_for_client`](crate::token::Tokens::expire_all_for_client)
    /// to end them).
    pub async fn update_client(
        &self,
        client_id: &str,
        update: ClientUpdate,
    ) -> Result<Client, Error> {
        self.active_realm().await?;
        self.modify_client(client_id, |stored, now| {
            let c = &mut stored.client;
            if let Some(uris) = &update.redirect_uris {
                c.redirect_uris.clone_from(uris);
            }
            if let Some(grants) = &update.grant_types {
                c.grant_types.clone_from(grants);
                dedup(&mut c.grant_types);
            }
            if let Some(scopes) = &update.scopes {
                c.scopes.clone_from(scopes);
                dedup(&mut c.scopes);
            }
            if let Some(audience) = &update.audience {
                c.audience.clone_from(audience);
            }
            if let Some(secs) = update.access_token_secs {
                c.access_token_secs = secs;
            }
            if let Some(pkce) = update.require_pkce {
                c.require_pkce = pkce;
            }
            if let Some(resources) = &update.resources {
                c.resources.clone_from(resources);
                dedup(&mut c.resources);
            }
            if let Some(audiences) = &update.subject_audiences {
                c.subject_audiences.clone_from(audiences);
                dedup(&mut c.subject_audiences);
            }
            c.updated_at = now;
            validate(c)?;
            Ok(())
        })
        .await
        .map(|(stored, _)| stored.client)
    }

    /// Replace a confidential client's secret: the old one stops working
    /// at once; the new one is in the answer, and only there.
    pub async fn rotate_client_secret(&self, client_id: &str) -> Result<SecretString, Error> {
        self.active_realm().await?;
        let (secret, digest) = Bearer::ClientSecret.generate()?;
        self.modify_client(client_id, |stored, now| {
            if stored.client.kind != ClientKind::Confidential {
                return Err(ValidationError::new(
                    "client_id",
                    "public clients have no secret",
                ));
            }
            stored.secret_digest = Some(digest);
            stored.client.updated_at = now;
            Ok(())
        })
        .await?;
        Ok(secret)
    }

    /// Load, change with `f`, and write back with compare-and-swap.
    async fn modify_client(
        &self,
        client_id: &str,
        f: impl Fn(&mut StoredClient, DateTime<Utc>) -> Result<(), ValidationError>,
    ) -> Result<(StoredClient, u64), Error> {
        let now = self.now();
        let key = layout::client(self.realm, client_id);
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (mut stored, version) = self
                .load_client(client_id)
                .await?
                .ok_or(OAuthError::ClientNotFound)?;
            f(&mut stored, now)?;
            let mut batch = Batch::new();
            batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &ClientRecord::V2(stored.clone()))?,
                Precondition::Version(version),
            )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok((stored, version)),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| OAuthError::ClientNotFound.into(), Error::from))
    }

    /// Delete a client and expire every token issued to it up to now (see
    /// the [module docs](self)). `OAUTH_CLIENT_NOT_FOUND` if absent.
    pub async fn delete_client(&self, client_id: &str) -> Result<(), Error> {
        self.active_realm().await?;
        let Some((_, version)) = self.load_client(client_id).await? else {
            return Err(OAuthError::ClientNotFound.into());
        };
        let mut batch = Batch::new();
        batch.delete(
            layout::client(self.realm, client_id),
            Precondition::Version(version),
        )?;
        match self.ctx.store.commit(batch).await {
            Ok(_) => {}
            // Deleted or changed meanwhile: whoever won, it is not ours to
            // delete blindly; report what is there now.
            Err(StorageError::Conflict { .. }) => return Err(OAuthError::ClientNotFound.into()),
            Err(e) => return Err(e.into()),
        }
        self.tokens()
            .expire_all_for_client(client_id, chrono::Duration::zero())
            .await
    }

    /// Authenticate a client at the token endpoint: a public client
    /// presents no secret, a confidential one its secret (compared in
    /// constant time). Unknown client, missing, wrong or unexpected secret
    /// are all `OAUTH_INVALID_CLIENT`.
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        secret: Option<&SecretString>,
    ) -> Result<Client, Error> {
        self.active_realm().await?;
        Ok(self.authenticated(client_id, secret).await?.client)
    }

    /// [`authenticate_client`](Self::authenticate_client) without the realm
    /// check (callers did it).
    pub(crate) async fn authenticated(
        &self,
        client_id: &str,
        secret: Option<&SecretString>,
    ) -> Result<StoredClient, Error> {
        let Some((stored, _)) = self.load_client(client_id).await? else {
            return Err(OAuthError::InvalidClient.into());
        };
        let proved = super::policy::proves(&stored, secret)?;
        if proved || stored.client.kind == ClientKind::Public {
            Ok(stored)
        } else {
            Err(OAuthError::InvalidClient.into())
        }
    }

    /// `client_secret_basic` (RFC 6749 §2.3.1): authenticate with the user
    /// name and password a front-end decoded from `Authorization: Basic`.
    /// Both are still form-urlencoded, as the RFC prescribes; this decodes
    /// them.
    pub async fn client_secret_basic(
        &self,
        user: &str,
        password: &SecretString,
    ) -> Result<Client, Error> {
        let (Some(client_id), Some(secret)) = (form_decode(user), form_decode(password.expose()))
        else {
            return Err(OAuthError::InvalidClient.into());
        };
        self.authenticate_client(&client_id, Some(&SecretString::new(secret)))
            .await
    }

    /// `client_secret_post` (RFC 6749 §2.3.1): authenticate with the
    /// `client_id` and `client_secret` form fields (already decoded by the
    /// form parser).
    pub async fn client_secret_post(
        &self,
        client_id: &str,
        client_secret: &SecretString,
    ) -> Result<Client, Error> {
        self.authenticate_client(client_id, Some(client_secret))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_that_register() {
        for ok in [
            "https://app.example.com/cb",
            "https://app.example.com",
            "https://app.example.com:8443/cb?x=1&y=%20",
            "http://localhost:8080/cb",
            "http://127.0.0.1:49152/cb",
            "http://[::1]/cb",
            "https://[2001:db8::1]:443/cb",
        ] {
            assert_eq!(validate_redirect_uri(ok), Ok(false), "{ok}");
        }
        assert_eq!(
            validate_redirect_uri("com.example.app:/oauth2/cb"),
            Ok(true)
        );
    }

    #[test]
    fn redirect_uris_that_do_not() {
        for bad in [
            "",
            "/cb",
            "app.example.com/cb",
            "https://app.example.com/cb#frag",
            "https://app.example.com/cb#",
            "https://user@app.example.com/cb",
            "https://app.example.com@evil.com/cb",
            "https://*.example.com/cb",
            "https://app.example.com/*",
            "https://App.Example.com/cb",
            "HTTPS://app.example.com/cb",
            "http://app.example.com/cb",
            "http://localhost.evil.com/cb",
            "https://app.example.com/a/../b",
            "https://app.example.com/cb?x=%zz",
            "https://app.example.com:0/cb",
            "https://app.example.com:65536/cb",
            "https://app.example.com:/cb",
            "https:///cb",
            "https://app.example.com/c b",
            "https://app.example.com/ü",
            "javascript:alert(1)",
            "data:text/html,x",
            "com.example.app://host/cb",
            "https:app.example.com",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_redirect_uri(&format!("https://a.example/{}", "x".repeat(2048))).is_err());
    }

    /// What an attacker registers to make the URI we check differ from the
    /// one a browser follows (WHATWG rewrites), each refused with a message
    /// naming the problem.
    #[test]
    fn whatwg_rewrites_do_not_register() {
        let problem = |uri: &str| match validate_redirect_uri(uri) {
            Ok(private_use) => panic!("{uri:?} accepted (private use: {private_use})"),
            Err(e) => e.problem,
        };
        for (uri, named) in [
            // IDNA: the parser turns the host to punycode.
            ("https://bücher.example/cb", "IDNA"),
            ("https://BÜCHER.example/cb", "IDNA"),
            // Percent-encoded dot segments climb like `..`.
            ("https://app.example/a/%2e%2e/cb", "%2e"),
            ("https://app.example/a/%2E%2E/cb", "%2e"),
            ("https://app.example/a/.%2E/cb", "%2e"),
            ("https://app.example/a/%2E/cb", "%2e"),
            ("com.example.app:/a/%2e%2e/cb", "%2e"),
            // Backslashes are '/' to the parser (and to browsers).
            ("https:\\\\evil.com/cb", "backslash"),
            ("https://app.example\\@evil.com/", "backslash"),
            ("https://app.example/cb\\..\\evil", "backslash"),
            // Tabs and newlines are stripped.
            ("https://app.exa\tmple/cb", "tab or newline"),
            ("https://app.example/c\nb", "tab or newline"),
            ("https://app.example/cb\r", "tab or newline"),
            // An IPv6 zone is no URL.
            ("http://[fe80::1%25eth0]:8080/cb", "IP literal"),
            // Loopback look-alikes are other hosts.
            ("http://127.0.0.1.evil.com/cb", "loopback"),
            ("http://localhost.evil.com/cb", "loopback"),
            ("http://localhost./cb", "host name"),
            ("http://[::2]/cb", "loopback"),
            // Other IPv4 spellings: the parser reads 127.0.0.1.
            ("http://0x7f000001/cb", "canonical"),
            ("http://2130706433/cb", "canonical"),
            ("http://0177.0.0.1/cb", "canonical"),
            ("http://127.1/cb", "canonical"),
            ("https://[0:0:0:0:0:0:0:1]/cb", "canonical"),
            ("https://[::ffff:127.0.0.1]/cb", "canonical"),
            ("https://[::FFFF:7f00:1]/cb", "lower-case host"),
            // Escapes in the host are decoded.
            ("https://app%2eexample.com/cb", "canonical"),
            // Userinfo, also empty.
            ("https://app.example.com:443@evil.com/cb", "userinfo"),
            ("https://@app.example.com/cb", "userinfo"),
            ("https://app.example.com@/cb", "need a host"),
            // Host name rules the parser is laxer about.
            ("https://app_x.example/cb", "host name"),
            ("https://-app.example/cb", "host name"),
            ("https://app.example./cb", "host name"),
            ("https://App.example/cb", "lower-case host"),
            ("Com.Example.App:/cb", "lower-case scheme"),
            // Ports the parser rewrites or that are no port.
            ("https://app.example.com:08443/cb", "canonical"),
            ("https://app.example.com:/cb", "canonical"),
            // Characters the parser percent-encodes.
            ("https://app.example/cb?x='", "canonical"),
            ("https://app.example/{cb}", "canonical"),
            ("https://app.example/\"cb\"", "canonical"),
            ("https://app.example/<cb>", "canonical"),
            // No authority.
            ("https:app.example.com/cb", "scheme://host"),
            ("https:/app.example.com/cb", "scheme://host"),
            ("https:///app.example.com/cb", "need a host"),
            ("com.example.app:cb", "scheme:/path"),
            ("com.example.app:", "scheme:/path"),
        ] {
            let got = problem(uri);
            assert!(
                got.contains(named),
                "{uri:?}: {got:?} does not say {named:?}"
            );
        }
    }

    /// What the WHATWG parser leaves as written, or rewrites harmlessly,
    /// still registers.
    #[test]
    fn canonical_uris_register() {
        for ok in [
            // The ASCII (punycode) form of an IDNA host is canonical, so it
            // is accepted: it is the name a browser resolves.
            "https://xn--bcher-kva.example/cb",
            // IPv6 loopback with a port is loopback (RFC 8252 §7.3).
            "http://[::1]:8080/cb",
            // Harmless rewrites: the empty path's '/', the default port.
            "https://app.example.com?x=1",
            "http://localhost:80/cb",
            "https://app.example.com:443",
            // Escapes stay as written (either case), and so must requests.
            "https://app.example.com/a%2Fb?q=%2f",
            "https://app.example.com/a%2e/b..c/.d",
            "https://app.example.com/cb?",
            "https://app.example.com/cb/",
        ] {
            assert_eq!(validate_redirect_uri(ok), Ok(false), "{ok}");
        }
        assert_eq!(validate_redirect_uri("com.example.app:/"), Ok(true));
    }

    #[test]
    fn form_decoding_keeps_one_value() {
        // One value: '&' and '=' are data, not separators.
        assert_eq!(form_decode("a=b&c").as_deref(), Some("a=b&c"));
        assert_eq!(form_decode("").as_deref(), Some(""));
        assert_eq!(
            form_decode("%C3%A9+%e9").as_deref(),
            None,
            "lone %e9 is not UTF-8"
        );
        assert_eq!(form_decode("%C3%A9").as_deref(), Some("é"));
        // `u8::from_str_radix` used to take a sign: "%+f" was 0x0f.
        assert_eq!(form_decode("%+f"), None);
        assert_eq!(form_decode("%4é"), None);
    }

    #[test]
    fn client_ids() {
        validate_client_id("web-app_1.v2:x~y").unwrap();
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(129)] {
            assert!(validate_client_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%2Bc%3A").as_deref(), Some("a b+c:"));
        assert_eq!(form_decode("%"), None);
        assert_eq!(form_decode("%4"), None);
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn client_record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let record = ClientRecord::V2(StoredClient {
            client: Client {
                client_id: "web".into(),
                realm: RealmId::from_bytes([
                    0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 1,
                ])
                .unwrap(),
                kind: ClientKind::Confidential,
                redirect_uris: vec!["https://a.example/cb".into()],
                grant_types: vec![GrantType::AuthorizationCode, GrantType::ClientCredentials],
                scopes: vec!["openid".into()],
                audience: "api".into(),
                access_token_secs: Some(60),
                require_pkce: true,
                created_at: at,
                updated_at: at,
                resources: vec!["payments".into()],
                subject_audiences: vec!["web".into()],
            },
            secret_digest: Some([7; 32]),
        });
        crate::store::record::assert_golden(&record, GOLDEN_CLIENT_V2);
        // A V1 record written by an earlier release still decodes, with no
        // further audiences.
        let old = decode_client(b"k", &crate::store::key::unhex(GOLDEN_CLIENT_V1)).unwrap();
        let ClientRecord::V2(mut current) = record else {
            unreachable!()
        };
        current.client.resources.clear();
        current.client.subject_audiences.clear();
        assert_eq!(old, current);
    }

    const GOLDEN_CLIENT_V2: &str = "01010377656210018bcfe568007000800000000000000101011468747470733a2f2f612e6578616d706c652f636202000201066f70656e696403617069013c0114323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31333a32305a01087061796d656e74730103776562010707070707070707070707070707070707070707070707070707070707070707";

    const GOLDEN_CLIENT_V1: &str = "01000377656210018bcfe568007000800000000000000101011468747470733a2f2f612e6578616d706c652f636202000201066f70656e696403617069013c0114323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31333a32305a010707070707070707070707070707070707070707070707070707070707070707";
}
