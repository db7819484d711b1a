//! The example server's mailbox: where it "sends" magic links and
//! sign-up confirmations.
//!
//! keystead never sends mail — [`Tokens::send_magic_link`](keystead::token::Tokens::send_magic_link)
//! hands the link to the embedder to deliver. A real deployment passes it
//! to its mailer here; this example has no mail transport, so it keeps the
//! last [`CAPACITY`] messages in memory, addressed by realm and recipient,
//! where an operator's tool (or an end-to-end test in the same process)
//! picks them up with [`take`]. The logs only say that a link went out,
//! never the link: it is a bearer secret.

use keystead::id::RealmId;
use keystead::secret::SecretString;
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// Most messages kept; the oldest is dropped first.
pub const CAPACITY: usize = 1024;

/// One delivered magic link.
#[derive(Debug)]
pub struct Mail {
    /// The realm the link logs into.
    pub realm: RealmId,
    /// The address it was sent to (as the client typed it).
    pub to: String,
    /// What the message is (`magic-link`, `sign-up`,
    /// `already-registered`).
    pub subject: &'static str,
    /// The full URL of the link (carries the secret).
    pub url: SecretString,
}

static OUTBOX: Mutex<VecDeque<Mail>> = Mutex::new(VecDeque::new());

/// "Send" `mail`: queue it for pickup.
pub fn deliver(mail: Mail) {
    tracing::info!(realm = %mail.realm, subject = mail.subject, "mail sent");
    let mut outbox = OUTBOX.lock().unwrap_or_else(PoisonError::into_inner);
    if outbox.len() == CAPACITY {
        outbox.pop_front();
    }
    outbox.push_back(mail);
}

/// Take the newest message sent to `to` in `realm`, if any (addresses
/// compared case-insensitively).
pub fn take(realm: RealmId, to: &str) -> Option<Mail> {
    let mut outbox = OUTBOX.lock().unwrap_or_else(PoisonError::into_inner);
    let index = outbox
        .iter()
        .rposition(|m| m.realm == realm && m.to.eq_ignore_ascii_case(to))?;
    outbox.remove(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_is_taken_once_by_realm_and_address() {
        let now = chrono::Utc::now();
        let realm = RealmId::generate(now);
        let other = RealmId::generate(now);
        deliver(Mail {
            realm,
            to: "Alice@example.com".into(),
            subject: "magic-link",
            url: SecretString::new("https://x.test/#t".into()),
        });
        assert!(take(other, "alice@example.com").is_none());
        let mail = take(realm, "alice@EXAMPLE.com").unwrap();
        assert_eq!(mail.subject, "magic-link");
        assert!(take(realm, "alice@example.com").is_none());
    }
}
