//! The server-rendered pages of the authorization-code flow: escaping and
//! the security headers every page carries.
//!
//! The pages are plain HTML forms — no script at all — so the browser
//! needs nothing but form posts and redirects. Every value a page echoes
//! (client id, username, error text, the transaction handle, an otpauth
//! URI) goes through [`escape`]; nothing is inserted raw.
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

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, PRAGMA, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
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

/// Escape `text` for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

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

/// A whole page: `title` (escaped here) and `body`, which the caller built
/// from escaped parts.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>\n",
        title = escape(title),
    );
    (
        status,
        security_headers(),
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response()
}

/// An error paragraph (message escaped here).
pub fn error_note(message: &str) -> String {
    format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message))
}

/// A hidden form field (name and value escaped here).
pub fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#x27;y&#x27;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain ü"), "plain ü");
    }

    #[test]
    fn pages_carry_the_security_headers() {
        let response = page(StatusCode::OK, "<t>", "<p>x</p>");
        let h = response.headers();
        assert_eq!(h[CACHE_CONTROL], "no-store");
        assert_eq!(h[X_FRAME_OPTIONS], "DENY");
        let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(h[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    }

    #[test]
    fn the_csp_hash_is_the_stylesheet_s() {
        let response = page(StatusCode::OK, "t", "");
        let csp = response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        let digest = ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes());
        let expected = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        assert!(csp.contains(&format!("'sha256-{expected}'")), "{csp}");
        assert!(
            !STYLE.contains("</style"),
            "the stylesheet can't end its element"
        );
    }

    #[test]
    fn hidden_fields_escape_their_value() {
        assert_eq!(
            hidden("login_tx", "a\"><script>"),
            "<input type=\"hidden\" name=\"login_tx\" value=\"a&quot;&gt;&lt;script&gt;\">"
        );
    }
}
