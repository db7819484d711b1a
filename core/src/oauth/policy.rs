//! The issuance policy: what any token may carry, decided by one pure
//! function for every grant.
//!
//! A token request is hostile until proven otherwise: whoever sends it picks
//! the `client_id`, the `scope` and the `resource`. [`decide`] bounds the
//! answer by what was registered and what the grant already holds:
//!
//! 1. **The client authenticated**: a confidential client proves its secret
//!    on every grant it uses (`invalid_client`); a public client has none
//!    to prove, so what a public client may get is exactly what its
//!    registration allows anyone naming it.
//! 2. **The client may use the grant** ([`Client::grant_types`];
//!    `unauthorized_client`). Client credentials and token exchange are for
//!    confidential clients only.
//! 3. **Scope**: every requested value is one the client registered
//!    ([`Client::scopes`]) and within the grant's ceiling — a refresh
//!    family's scope, a subject token's, an application-token session's
//!    (`invalid_scope`, never silently granted). An empty request takes the
//!    grant's default: the ceiling's scope (narrowed to what the client
//!    still may ask) for refresh and exchange, every registered value but
//!    `openid` for client credentials, nothing otherwise.
//! 4. **Audience**: the `aud` is the requested `resource` (RFC 8707) or
//!    the client's default audience, and must be one the client registered
//!    ([`Client::audience`], [`Client::resources`]); a refresh keeps its
//!    family's audience (`invalid_target`).
//!
//! Refresh and exchange therefore only ever narrow. Lifetimes are bounded
//! by the callers (a refresh by the realm and the client, an exchange also
//! by its subject token's `exp`).
//!
//! # Which client
//!
//! Every grant names a registered client of the realm; an unknown or
//! deleted one is `invalid_client`, on every grant including refresh. A
//! front-end whose requests carry no `client_id` (its own login pages, the
//! seeds' login APIs) names its **first-party client**: an ordinary client
//! registered with [`NewClient::first_party`](super::NewClient::first_party)
//! (public, [`GrantType::Password`] and refresh, the front-end's audience
//! and scopes). The realm configures it like any client
//! ([`OAuth::update_client`](super::OAuth::update_client)) and disables it
//! by deleting it or removing its `Password` grant; nothing is implied.
//!
//! One-time and scoped tokens ([`crate::token::grants`]) are made by the
//! embedder for a session it already holds, not by a client presenting
//! credentials: [`derive`] bounds them by the client's scopes and
//! audiences and the session's ceiling, without a grant type.

use super::OAuthError;
use super::client::{Client, ClientKind, GrantType, StoredClient};
use crate::secret::SecretString;

/// What the caller asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask<'a> {
    /// The requested scope values; empty takes the grant's default.
    pub scope: &'a [String],
    /// The requested audience (RFC 8707 `resource`, token exchange's
    /// `audience`); `None` takes the grant's default.
    pub resource: Option<&'a str>,
}

/// What the grant already holds and the token may not exceed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ceiling<'a> {
    /// The most scope the token may carry (a refresh family's, a subject
    /// token's, an application-token session's); `None`: only the client
    /// bounds it.
    pub scope: Option<&'a [String]>,
    /// The audience the token must keep (a refresh keeps its family's).
    pub audience: Option<&'a str>,
}

/// What the token will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The `aud` claim.
    pub audience: String,
    /// The scope values, without duplicates, in the order asked.
    pub scope: Vec<String>,
}

/// Decide what a token for `client` under `grant` may carry; see the
/// [module docs](self) for the rules, in the order they are checked.
/// `authenticated` says whether the request proved the client's secret.
pub fn decide(
    client: &Client,
    grant: GrantType,
    authenticated: bool,
    ask: Ask<'_>,
    ceiling: Ceiling<'_>,
) -> Result<Granted, OAuthError> {
    let confidential = client.kind == ClientKind::Confidential;
    if confidential && !authenticated {
        return Err(OAuthError::InvalidClient);
    }
    let confidential_only = matches!(
        grant,
        GrantType::ClientCredentials | GrantType::TokenExchange
    );
    if !client.allows(grant) || (confidential_only && !confidential) {
        return Err(OAuthError::UnauthorizedClient);
    }
    bounded(client, grant, ask, ceiling)
}

/// Rules 3 and 4 of [`decide`].
fn bounded(
    client: &Client,
    grant: GrantType,
    ask: Ask<'_>,
    ceiling: Ceiling<'_>,
) -> Result<Granted, OAuthError> {
    let scope = scope_of(client, grant, ask.scope, ceiling.scope)?;
    let audience = ask
        .resource
        .or(ceiling.audience)
        .unwrap_or(&client.audience);
    if ceiling.audience.is_some_and(|kept| kept != audience) || !client.may_target(audience) {
        return Err(OAuthError::InvalidTarget);
    }
    Ok(Granted {
        audience: audience.to_owned(),
        scope,
    })
}

/// What a request with `secret` proves about `stored`: `Ok(true)` for the
/// right secret of a confidential client, `Ok(false)` for no secret (a
/// public client has nothing to prove; [`decide`] refuses a confidential
/// one), `invalid_client` for a wrong secret or a secret sent for a public
/// client. Compared in constant time.
pub(crate) fn proves(
    stored: &StoredClient,
    secret: Option<&SecretString>,
) -> Result<bool, OAuthError> {
    use subtle::ConstantTimeEq;
    match (stored.secret_digest, secret) {
        (_, None) => Ok(false),
        (Some(expected), Some(presented)) => {
            let right = super::Bearer::ClientSecret
                .digest(presented.expose())
                .is_some_and(|digest| bool::from(digest.ct_eq(&expected)));
            if right {
                Ok(true)
            } else {
                Err(OAuthError::InvalidClient)
            }
        }
        (None, Some(_)) => Err(OAuthError::InvalidClient),
    }
}

/// The client a request to a non-grant endpoint (revocation,
/// introspection) names, authenticated: registered (`None`: not
/// registered, or deleted), and a confidential client proved its secret;
/// `invalid_client` otherwise (RFC 7009 §2.1, RFC 7662 §2.1).
pub(crate) fn identify<'a>(
    stored: Option<&'a StoredClient>,
    secret: Option<&SecretString>,
) -> Result<&'a StoredClient, OAuthError> {
    let stored = stored.ok_or(OAuthError::InvalidClient)?;
    let proved = proves(stored, secret)?;
    if stored.client.kind == super::ClientKind::Confidential && !proved {
        return Err(OAuthError::InvalidClient);
    }
    Ok(stored)
}

/// [`decide`] for the client a request named (`None`: not registered, or
/// deleted: `invalid_client`) and the secret it presented.
pub(crate) fn admit(
    stored: Option<&StoredClient>,
    secret: Option<&SecretString>,
    grant: GrantType,
    ask: Ask<'_>,
    ceiling: Ceiling<'_>,
) -> Result<Granted, OAuthError> {
    let stored = stored.ok_or(OAuthError::InvalidClient)?;
    let authenticated = proves(stored, secret)?;
    decide(&stored.client, grant, authenticated, ask, ceiling)
}

/// The bounds of a token the embedder derives from a session it holds (a
/// one-time or scoped token; see the [module docs](self)): the client is
/// registered, and scope and audience are as [`decide`] rules 3 and 4 say
/// for a direct login.
pub(crate) fn derive(
    stored: Option<&StoredClient>,
    ask: Ask<'_>,
    ceiling: Ceiling<'_>,
) -> Result<Granted, OAuthError> {
    let client = &stored.ok_or(OAuthError::InvalidClient)?.client;
    bounded(client, GrantType::Password, ask, ceiling)
}

/// The scope of [`decide`]'s rule 3.
fn scope_of(
    client: &Client,
    grant: GrantType,
    asked: &[String],
    ceiling: Option<&[String]>,
) -> Result<Vec<String>, OAuthError> {
    let within_ceiling = |s: &String| ceiling.is_none_or(|c| c.contains(s));
    if asked.is_empty() {
        let default: Vec<String> = match (grant, ceiling) {
            (GrantType::RefreshToken | GrantType::TokenExchange, Some(held)) => held
                .iter()
                .filter(|s| client.scopes.contains(s))
                .cloned()
                .collect(),
            (GrantType::ClientCredentials, _) => client
                .scopes
                .iter()
                .filter(|s| *s != super::SCOPE_OPENID && within_ceiling(s))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        return Ok(dedup(default));
    }
    if crate::token::check_scope(asked).is_err() {
        return Err(OAuthError::InvalidScope);
    }
    let openid_refused = grant == GrantType::ClientCredentials;
    let allowed = |s: &String| {
        client.scopes.contains(s)
            && within_ceiling(s)
            && !(openid_refused && s == super::SCOPE_OPENID)
    };
    if !asked.iter().all(allowed) {
        return Err(OAuthError::InvalidScope);
    }
    Ok(dedup(asked.to_vec()))
}

fn dedup(mut values: Vec<String>) -> Vec<String> {
    let mut seen = 0;
    while seen < values.len() {
        if values[..seen].contains(&values[seen]) {
            values.remove(seen);
        } else {
            seen += 1;
        }
    }
    values
}

/// Token exchange's own rule (RFC 8693 §2.1 leaves it to the server): a
/// client may present a subject token issued to itself, or one whose
/// audience it registered in [`Client::subject_audiences`].
pub fn may_exchange(client: &Client, subject_client_id: &str, subject_audience: &str) -> bool {
    subject_client_id == client.client_id
        || client
            .subject_audiences
            .iter()
            .any(|a| a == subject_audience)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RealmId;
    use proptest::prelude::*;

    fn client(kind: ClientKind, grants: &[GrantType], scopes: &[&str]) -> Client {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Client {
            client_id: "app".into(),
            realm: RealmId::from_bytes([
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 1,
            ])
            .unwrap(),
            kind,
            redirect_uris: Vec::new(),
            grant_types: grants.to_vec(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            audience: "api".into(),
            access_token_secs: None,
            require_pkce: true,
            created_at: at,
            updated_at: at,
            resources: vec!["reports".into()],
            subject_audiences: Vec::new(),
        }
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    use ClientKind::{Confidential, Public};
    use GrantType::{AuthorizationCode, ClientCredentials, Password, RefreshToken, TokenExchange};

    /// (grant, kind, registered grants, authenticated, asked scope,
    /// resource, ceiling scope, kept audience) → outcome.
    #[test]
    #[allow(clippy::too_many_lines)] // one row per case: the table is the test
    fn the_table() {
        type Case<'a> = (
            GrantType,
            ClientKind,
            &'a [GrantType],
            bool,
            &'a [&'a str],
            Option<&'a str>,
            Option<&'a [&'a str]>,
            Option<&'a str>,
            Result<(&'a str, &'a [&'a str]), OAuthError>,
        );
        let cases: &[Case<'_>] = &[
            // Password grant, public first-party client: its scopes, its audience.
            (
                Password,
                Public,
                &[Password],
                false,
                &["read"],
                None,
                None,
                None,
                Ok(("api", &["read"])),
            ),
            // Empty ask on a direct login: nothing.
            (
                Password,
                Public,
                &[Password],
                false,
                &[],
                None,
                None,
                None,
                Ok(("api", &[])),
            ),
            // A registered further audience.
            (
                Password,
                Public,
                &[Password],
                false,
                &[],
                Some("reports"),
                None,
                None,
                Ok(("reports", &[])),
            ),
            // Any other audience is refused, never granted.
            (
                Password,
                Public,
                &[Password],
                false,
                &[],
                Some("payments-api"),
                None,
                None,
                Err(OAuthError::InvalidTarget),
            ),
            // A scope the client never registered.
            (
                Password,
                Public,
                &[Password],
                false,
                &["payments:write"],
                None,
                None,
                None,
                Err(OAuthError::InvalidScope),
            ),
            // The grant is not registered.
            (
                Password,
                Public,
                &[AuthorizationCode],
                false,
                &[],
                None,
                None,
                None,
                Err(OAuthError::UnauthorizedClient),
            ),
            // Confidential client without its secret.
            (
                Password,
                Confidential,
                &[Password],
                false,
                &[],
                None,
                None,
                None,
                Err(OAuthError::InvalidClient),
            ),
            (
                Password,
                Confidential,
                &[Password],
                true,
                &["read"],
                None,
                None,
                None,
                Ok(("api", &["read"])),
            ),
            // An application-token session bounds the scope.
            (
                Password,
                Public,
                &[Password],
                false,
                &["write"],
                None,
                Some(&["read"]),
                None,
                Err(OAuthError::InvalidScope),
            ),
            // Refresh: default is the family's scope, narrowing allowed, widening not.
            (
                RefreshToken,
                Public,
                &[Password, RefreshToken],
                false,
                &[],
                None,
                Some(&["read", "write"]),
                Some("api"),
                Ok(("api", &["read", "write"])),
            ),
            (
                RefreshToken,
                Public,
                &[Password, RefreshToken],
                false,
                &["read"],
                None,
                Some(&["read", "write"]),
                Some("api"),
                Ok(("api", &["read"])),
            ),
            (
                RefreshToken,
                Public,
                &[Password, RefreshToken],
                false,
                &["admin"],
                None,
                Some(&["read"]),
                Some("api"),
                Err(OAuthError::InvalidScope),
            ),
            // A refresh keeps its family's audience, even for a registered one.
            (
                RefreshToken,
                Public,
                &[Password, RefreshToken],
                false,
                &[],
                Some("reports"),
                Some(&["read"]),
                Some("api"),
                Err(OAuthError::InvalidTarget),
            ),
            // A client that lost a scope since: the default narrows to what it still has.
            (
                RefreshToken,
                Public,
                &[Password, RefreshToken],
                false,
                &[],
                None,
                Some(&["read", "gone"]),
                Some("api"),
                Ok(("api", &["read"])),
            ),
            (
                RefreshToken,
                Public,
                &[Password],
                false,
                &[],
                None,
                Some(&["read"]),
                Some("api"),
                Err(OAuthError::UnauthorizedClient),
            ),
            // Client credentials: confidential only, all but openid by default.
            (
                ClientCredentials,
                Confidential,
                &[ClientCredentials],
                true,
                &[],
                None,
                None,
                None,
                Ok(("api", &["read", "write"])),
            ),
            (
                ClientCredentials,
                Confidential,
                &[ClientCredentials],
                true,
                &["openid"],
                None,
                None,
                None,
                Err(OAuthError::InvalidScope),
            ),
            (
                ClientCredentials,
                Public,
                &[ClientCredentials],
                false,
                &[],
                None,
                None,
                None,
                Err(OAuthError::UnauthorizedClient),
            ),
            // Token exchange: authenticated confidential clients, within the subject's scope.
            (
                TokenExchange,
                Confidential,
                &[TokenExchange],
                true,
                &[],
                Some("reports"),
                Some(&["read"]),
                None,
                Ok(("reports", &["read"])),
            ),
            (
                TokenExchange,
                Confidential,
                &[TokenExchange],
                true,
                &["write"],
                None,
                Some(&["read"]),
                None,
                Err(OAuthError::InvalidScope),
            ),
            (
                TokenExchange,
                Confidential,
                &[TokenExchange],
                false,
                &[],
                None,
                Some(&["read"]),
                None,
                Err(OAuthError::InvalidClient),
            ),
            (
                TokenExchange,
                Public,
                &[TokenExchange],
                false,
                &[],
                None,
                Some(&["read"]),
                None,
                Err(OAuthError::UnauthorizedClient),
            ),
            // Malformed scope values are refused as scope.
            (
                Password,
                Public,
                &[Password],
                false,
                &["a\"b"],
                None,
                None,
                None,
                Err(OAuthError::InvalidScope),
            ),
            // Duplicates collapse.
            (
                AuthorizationCode,
                Public,
                &[AuthorizationCode],
                false,
                &["read", "read"],
                None,
                None,
                None,
                Ok(("api", &["read"])),
            ),
        ];
        for (i, (grant, kind, grants, authenticated, asked, resource, ceiling, kept, want)) in
            cases.iter().enumerate()
        {
            let c = client(*kind, grants, &["openid", "read", "write"]);
            let asked = strings(asked);
            let ceiling_scope = ceiling.map(strings);
            let got = decide(
                &c,
                *grant,
                *authenticated,
                Ask {
                    scope: &asked,
                    resource: *resource,
                },
                Ceiling {
                    scope: ceiling_scope.as_deref(),
                    audience: *kept,
                },
            );
            let want = want.clone().map(|(aud, scope)| Granted {
                audience: aud.to_owned(),
                scope: strings(scope),
            });
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn exchange_subjects() {
        let mut c = client(Confidential, &[TokenExchange], &["read"]);
        assert!(may_exchange(&c, "app", "anything"));
        assert!(!may_exchange(&c, "web", "api"));
        c.subject_audiences = vec!["api".into()];
        assert!(may_exchange(&c, "web", "api"));
        assert!(!may_exchange(&c, "web", "payments"));
    }

    const SCOPES: [&str; 5] = ["openid", "read", "write", "admin", "introspect"];
    const AUDIENCES: [&str; 4] = ["api", "reports", "payments", "web"];
    const GRANTS: [GrantType; 5] = [
        Password,
        AuthorizationCode,
        RefreshToken,
        ClientCredentials,
        TokenExchange,
    ];

    fn pick<T: Clone>(from: &[T], mask: u8) -> Vec<T> {
        from.iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, v)| v.clone())
            .collect()
    }

    proptest! {
        /// No generated request ever yields a token wider than the client's
        /// registration, the grant's ceiling, or a grant it may not use.
        #[test]
        fn never_wider_than_registered(
            confidential in any::<bool>(),
            grants in any::<u8>(),
            registered in any::<u8>(),
            resources in any::<u8>(),
            grant in 0usize..GRANTS.len(),
            authenticated in any::<bool>(),
            asked in any::<u8>(),
            resource in proptest::option::of(0usize..AUDIENCES.len()),
            ceiling in proptest::option::of(any::<u8>()),
            kept in proptest::option::of(0usize..AUDIENCES.len()),
        ) {
            let kind = if confidential { Confidential } else { Public };
            let mut c = client(kind, &pick(&GRANTS, grants), &pick(&SCOPES, registered));
            c.resources = pick(&AUDIENCES, resources).iter().map(|s| (*s).to_owned()).collect();
            let grant = GRANTS[grant];
            let asked = strings(&pick(&SCOPES, asked));
            let ceiling_scope = ceiling.map(|m| strings(&pick(&SCOPES, m)));
            let result = decide(
                &c,
                grant,
                authenticated,
                Ask { scope: &asked, resource: resource.map(|i| AUDIENCES[i]) },
                Ceiling { scope: ceiling_scope.as_deref(), audience: kept.map(|i| AUDIENCES[i]) },
            );
            if let Ok(granted) = result {
                prop_assert!(c.allows(grant));
                prop_assert!(!confidential || authenticated);
                prop_assert!(confidential || !matches!(grant, ClientCredentials | TokenExchange));
                prop_assert!(c.may_target(&granted.audience));
                if let Some(i) = kept {
                    prop_assert_eq!(&granted.audience, AUDIENCES[i]);
                }
                for s in &granted.scope {
                    prop_assert!(c.scopes.contains(s), "{} not registered", s);
                    if let Some(held) = &ceiling_scope {
                        prop_assert!(held.contains(s), "{} above the ceiling", s);
                    }
                    prop_assert!(asked.is_empty() || asked.contains(s), "{} not asked", s);
                }
                if grant == ClientCredentials {
                    prop_assert!(!granted.scope.iter().any(|s| s == "openid"));
                }
            }
        }
    }
}
