//! The server-rendered pages of the authorization-code flow: their
//! templates and the security headers every page carries.
//!
//! The pages are plain HTML forms — no script at all — so the browser
//! needs nothing but form posts and redirects.
//!
//! The templates are [maud](https://maud.lambda.xyz) `html!` blocks: Rust
//! code the compiler checks, with no template files to ship and nothing
//! loaded at run time, and every `(value)` spliced into one is escaped
//! (`&`, `<`, `>`, `"`; attributes are always double-quoted, so a `'` can't
//! end one). Askama would escape as well, but its templates are a second
//! language in separate files (or strings), which buys nothing for a
//! handful of small forms composed from fragments; here a page is a function.
//! Every value a page echoes (client id, username, error text, the
//! transaction handle, an otpauth URI) is such a splice; nothing is inserted
//! raw, and the only unescaped text is the constant stylesheet.
//!
//! Headers ([`page`]):
//!
//! * `Cache-Control: no-store` — the pages carry a login transaction's
//!   handle (and, at enrolment, a TOTP secret): no cache may keep them;
//! * `Content-Security-Policy: default-src 'none'; style-src 'sha256-…';
//!   base-uri 'none'; frame-ancestors 'none'` — nothing loads, no script
//!   runs, only the page's own stylesheet (pinned by its hash) applies and
//!   no other site can frame the page (clickjacking). There is no
//!   `form-action`: a form post ends in a redirect to the client's
//!   redirect URI, and browsers apply `form-action` to that redirect too;
//! * `X-Frame-Options: DENY` for browsers without CSP level 2,
//!   `Referrer-Policy: no-referrer` (the page's URL carries `state` and
//!   the PKCE challenge; the redirect carries the code) and
//!   `X-Content-Type-Options: nosniff`.

use super::authorize::TX_FIELD;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, PRAGMA, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use keystead::mfa::MfaFactor;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::sync::LazyLock;

/// The one stylesheet of the pages (inline, allowed by its hash).
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}\
input{width:100%;padding:.4rem;box-sizing:border-box}button{margin-top:1rem;padding:.4rem 1rem}\
.error{color:#a00;border:1px solid #a00;padding:.5rem}code{word-break:break-all}\
.muted{color:#666;font-size:.9rem}";

/// The Content-Security-Policy of every page (see the [module docs](self)).
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// The headers of every page and of the flow's redirects: no caching,
/// no referrer, no framing, no sniffing, and the CSP.
pub fn security_headers() -> [(HeaderName, HeaderValue); 6] {
    [
        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (PRAGMA, HeaderValue::from_static("no-cache")),
        (CONTENT_SECURITY_POLICY, CSP.clone()),
        (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ]
}

/// The whole document: `title` (as the title and the heading) and `body`.
fn document(title: &str, body: &Markup) -> Markup {
    html! {
        (DOCTYPE) "\n"
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width";
                title { (title) }
                // `<style>` is raw text (entities are not decoded there), so
                // the stylesheet goes in unescaped — and byte for byte, as its
                // CSP hash requires. It is a compile-time constant, never a
                // value of a request, and can't contain `</style`
                // (`the_page_s_style_is_the_one_the_csp_allows`).
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                (body)
            }
        }
        "\n"
    }
}

/// A whole page: `title` and `body` (from this module's templates), with
/// the [security headers](security_headers).
pub fn page(status: StatusCode, title: &str, body: &Markup) -> Response {
    (
        status,
        security_headers(),
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        document(title, body).into_string(),
    )
        .into_response()
}

/// An error paragraph.
pub fn error_note(message: &str) -> Markup {
    html! { p class="error" role="alert" { (message) } }
}

/// A hidden form field.
pub fn hidden(name: &str, value: &str) -> Markup {
    html! { input type="hidden" name=(name) value=(value); }
}

/// Where a page's forms post, and the login transaction they carry.
#[derive(Debug, Clone, Copy)]
pub struct Flow<'a> {
    /// The realm's name: the forms post to its login actions.
    pub realm: &'a str,
    /// The transaction's handle, sent back in the hidden field `login_tx`.
    pub handle: &'a str,
}

impl Flow<'_> {
    /// The path of the login action `name` (realm names are DNS labels;
    /// escaped anyway, as every attribute value).
    fn action(self, name: &str) -> String {
        format!("/realms/{}/login-actions/{name}", self.realm)
    }

    /// The hidden field with the handle.
    fn tx(self) -> Markup {
        hidden(TX_FIELD, self.handle)
    }
}

/// The Cancel button (skips the browser's required-field checks).
fn cancel() -> Markup {
    html! { button type="submit" name="action" value="cancel" formnovalidate { "Cancel" } }
}

/// The first page's introduction: which client asks, and for what scope.
pub fn sign_in_intro(client_id: &str, scope: &[String]) -> Markup {
    html! {
        p { "Sign in to continue to " strong { (client_id) } "." }
        @if !scope.is_empty() {
            p class="muted" { "Access asked for: " (scope.join(" ")) }
        }
    }
}

/// The username and password form, after `intro` (may be empty) and the
/// error `note`, if any; `username` is the one entered before, if any.
pub fn password_form(
    flow: Flow<'_>,
    intro: &Markup,
    note: Option<&str>,
    username: Option<&str>,
) -> Markup {
    html! {
        (intro)
        @if let Some(note) = note { (error_note(note)) }
        form method="post" action=(flow.action("authenticate")) {
            (flow.tx())
            label for="username" { "Username" }
            input id="username" name="username" autocomplete="username" required
                autofocus value=(username.unwrap_or_default());
            label for="password" { "Password" }
            input id="password" name="password" type="password"
                autocomplete="current-password" required;
            button type="submit" { "Sign in" } " " (cancel())
        }
    }
}

/// The second-factor forms for the `factors` the challenge accepts (their
/// names, kept in a hidden field for the page after a wrong code), after
/// the error `note`, if any.
pub fn second_factor_forms(flow: Flow<'_>, factors: &[&str], note: Option<&str>) -> Markup {
    let has = |f: MfaFactor| factors.contains(&f.as_str());
    let kept = hidden("factors", &factors.join(" "));
    html! {
        @if let Some(note) = note { (error_note(note)) }
        @if has(MfaFactor::Totp) {
            form method="post" action=(flow.action("challenge-otp")) {
                (flow.tx()) (kept)
                label for="code" { "Code from your authenticator app" }
                input id="code" name="code" inputmode="numeric"
                    autocomplete="one-time-code" required autofocus;
                button type="submit" { "Verify" } " " (cancel())
            }
        }
        @if has(MfaFactor::Recovery) {
            form method="post" action=(flow.action("burn-recovery-code")) {
                (flow.tx()) (kept)
                label for="recovery_code" { "Or a recovery code" }
                input id="recovery_code" name="recovery_code" autocomplete="off" required;
                button type="submit" { "Use recovery code" }
            }
        }
        @if !has(MfaFactor::Totp) && !has(MfaFactor::Recovery) {
            p {
                "Your second factor needs a security key or passkey, which this page \
                 cannot use. Sign in from an application that supports it."
            }
            form method="post" action=(flow.action("challenge-otp")) {
                (flow.tx()) (cancel())
            }
        }
    }
}

/// The enrolment page's introduction: the new TOTP key, as its base32
/// secret and its otpauth URI.
pub fn enrollment_intro(secret_base32: &str, otpauth_uri: &str) -> Markup {
    html! {
        p {
            "This realm requires a second factor. Add this key to your authenticator app \
             (the URI as a QR code, or the secret by hand), then enter its current code."
        }
        p { "Secret: " code { (secret_base32) } }
        p class="muted" { "URI: " code { (otpauth_uri) } }
    }
}

/// The form for the first code of the key `key_id`, after `intro` (the
/// key itself, or the error of a wrong code).
pub fn enrollment_form(flow: Flow<'_>, key_id: &str, intro: &Markup) -> Markup {
    html! {
        (intro)
        form method="post" action=(flow.action("verify-otp")) {
            (flow.tx())
            (hidden("key_id", key_id))
            label for="code" { "Code from your authenticator app" }
            input id="code" name="code" inputmode="numeric"
                autocomplete="one-time-code" required autofocus;
            button type="submit" { "Activate and sign in" } " " (cancel())
        }
    }
}

/// The body of a page that ends the flow: `message`, and what to do.
pub fn refusal(message: &str) -> Markup {
    html! {
        (error_note(message))
        p { "Return to the application and start signing in again." }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_the_security_headers() {
        let response = page(StatusCode::OK, "<t>", &html! { p { "x" } });
        let h = response.headers();
        assert_eq!(h[CACHE_CONTROL], "no-store");
        assert_eq!(h[X_FRAME_OPTIONS], "DENY");
        let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("script-src"), "no script is allowed");
        assert!(h[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    }

    #[test]
    fn the_page_s_style_is_the_one_the_csp_allows() {
        let html = document("t", &Markup::default()).into_string();
        let start = html.find("<style>").unwrap() + "<style>".len();
        let end = start + html[start..].find("</style>").unwrap();
        assert_eq!(html.matches("<style").count(), 1, "one stylesheet");
        let digest = ring::digest::digest(&ring::digest::SHA256, &html.as_bytes()[start..end]);
        let expected = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        let csp = page(StatusCode::OK, "t", &Markup::default()).headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains(&format!("'sha256-{expected}'")), "{csp}");
        assert!(
            !STYLE.to_ascii_lowercase().contains("</style"),
            "the stylesheet can't end its element"
        );
    }

    #[test]
    fn hidden_fields_escape_their_value() {
        assert_eq!(
            hidden("login_tx", "a\"><script>").into_string(),
            "<input type=\"hidden\" name=\"login_tx\" value=\"a&quot;&gt;&lt;script&gt;\">"
        );
    }

    /// Every page of the flow, with `v` in each value it echoes: realm
    /// name, handle, client id, scope, username, error text, factor names,
    /// key id, TOTP secret and URI.
    fn every_page(v: &str) -> Vec<(&'static str, Markup)> {
        let flow = Flow {
            realm: v,
            handle: v,
        };
        let scope = [v.to_owned(), "openid".to_owned()];
        vec![
            (
                "sign in",
                password_form(flow, &sign_in_intro(v, &scope), None, None),
            ),
            (
                "sign in again",
                password_form(flow, &Markup::default(), Some(v), Some(v)),
            ),
            (
                "second factor",
                second_factor_forms(flow, &["totp", "recovery", v], Some(v)),
            ),
            (
                "no usable second factor",
                second_factor_forms(flow, &[v], Some(v)),
            ),
            (
                "enrolment",
                enrollment_form(flow, v, &enrollment_intro(v, v)),
            ),
            ("enrolment again", enrollment_form(flow, v, &error_note(v))),
            ("refused", refusal(v)),
        ]
        .into_iter()
        .map(|(name, body)| (name, document(v, &body)))
        .collect()
    }

    /// The markup's structure: each tag with its attributes' names, values
    /// and text left out. Attribute values must be double-quoted.
    fn skeleton(html: &str) -> Vec<String> {
        let mut tags = Vec::new();
        let mut rest = html;
        while let Some(open) = rest.find('<') {
            rest = &rest[open + 1..];
            let name_end = rest
                .find(|c: char| c.is_ascii_whitespace() || c == '>')
                .expect("a tag ends");
            let mut tag = rest[..name_end].to_ascii_lowercase();
            rest = &rest[name_end..];
            loop {
                rest = rest.trim_start();
                if let Some(after) = rest.strip_prefix('>') {
                    rest = after;
                    break;
                }
                let end = rest
                    .find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '>')
                    .expect("an attribute ends");
                tag.push(' ');
                tag.push_str(&rest[..end].to_ascii_lowercase());
                rest = &rest[end..];
                if let Some(after) = rest.strip_prefix("=\"") {
                    let close = after.find('"').expect("a closed attribute value");
                    rest = &after[close + 1..];
                } else {
                    assert!(!rest.starts_with('='), "unquoted value in <{tag}");
                }
            }
            tags.push(tag);
        }
        tags
    }

    #[test]
    fn attacker_values_stay_text_on_every_page() {
        let payloads = [
            "\"><script>alert(1)</script>",
            "' onmouseover='x",
            "</textarea>",
            "</style><script>alert(1)</script>",
            "\" autofocus onfocus=\"alert(1)",
            " onmouseover=x",
            "<!-- <img src=x onerror=alert(1)>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        ];
        let benign = every_page("benign");
        for payload in payloads {
            let escaped = html! { (payload) }.into_string();
            for ((name, page), (_, plain)) in every_page(payload).into_iter().zip(&benign) {
                let html = page.into_string();
                let lower = html.to_ascii_lowercase();
                // The value is on the page, escaped: as text, never markup.
                assert!(html.contains(&escaped), "{name}: {payload}\n{html}");
                if payload.contains(['<', '>', '"', '&']) {
                    assert!(!html.contains(payload), "{name}: {payload} raw\n{html}");
                }
                for raw in ["<script", "</textarea", "<img", "<!--"] {
                    assert!(!lower.contains(raw), "{name}: {raw}\n{html}");
                }
                assert_eq!(lower.matches("</style").count(), 1, "{name}\n{html}");
                // No tag or attribute came in or went: a `'` or a space
                // stays inside its double-quoted value.
                let tags = skeleton(&html);
                assert_eq!(tags, skeleton(&plain.0), "{name}: {payload}\n{html}");
                assert!(
                    !tags.iter().any(|t| t.contains(" on")),
                    "{name}: an event handler\n{html}"
                );
            }
        }
    }
}
