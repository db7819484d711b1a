//! Cross-process change notification with `LISTEN/NOTIFY`.
//!
//! Every writing commit runs `pg_notify(channel, version)` inside its
//! transaction, so PostgreSQL delivers the notification exactly when — and
//! only if — the commit becomes visible. Each [`PostgresStore`] that has
//! watches keeps one dedicated connection (outside the pool) that `LISTEN`s on
//! the channel and wakes every local watch on each notification. The
//! payload (the commit's version) is informative only: watches never
//! ordered or resumed by it — versions order nothing across keys — but by
//! the event records' own per-group sequence numbers, so replacing the
//! store-wide commit counter with per-key versions changed nothing here.
//!
//! A notification sent while no listener was connected is lost, so the
//! listener wakes every watch each time it (re)establishes `LISTEN`: the
//! subscriber then re-reads its outbox from its cursor, which replays
//! whatever it missed. Together with the immediate in-process wake-up after
//! a local commit, that keeps the [`watch`](keystead::store::watch) promise:
//! no commit acknowledged after a watch was made goes unnoticed.
//!
//! [`PostgresStore`]: crate::PostgresStore

use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use keystead::store::watch::Notifier;
use std::sync::Weak;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Client};

/// A fresh listener connection: the client, and the stream of its
/// asynchronous messages (driving that stream drives the connection).
pub(crate) type Connection = (
    Client,
    BoxStream<'static, Result<AsyncMessage, tokio_postgres::Error>>,
);

/// Opens a listener connection with the store's configuration and TLS.
pub(crate) type Connector = std::sync::Arc<
    dyn Fn() -> BoxFuture<'static, Result<Connection, tokio_postgres::Error>> + Send + Sync,
>;

/// The longest back-off between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The notification channel of a store in `schema` (the public schema when
/// empty). Identifiers are at most 63 bytes; a truncated name shared by two
/// schemas only causes spurious wake-ups, which watches allow.
pub(crate) fn channel_name(schema: &str) -> String {
    let mut name = if schema.is_empty() {
        "keystead".to_owned()
    } else {
        format!("keystead_{schema}")
    };
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// `channel` as a quoted SQL identifier.
fn quoted(channel: &str) -> String {
    format!("\"{}\"", channel.replace('"', "\"\""))
}

/// What the listener needs from its store; a weak reference, so the task
/// ends when the store is dropped.
pub(crate) trait Listening: Send + Sync + 'static {
    /// Where wake-ups go.
    fn notifier(&self) -> &Notifier;
    /// Whether the store was closed (the task then ends).
    fn is_closed(&self) -> bool;
}

/// Run until the store is closed or dropped: connect, `LISTEN`, wake every
/// watch once listening (replay), then on every notification; reconnect
/// with back-off when the connection fails.
pub(crate) async fn run<S: Listening>(store: Weak<S>, connect: Connector, channel: String) {
    let listen = format!("LISTEN {}", quoted(&channel));
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.upgrade() {
            Some(s) if !s.is_closed() => {}
            _ => return,
        }
        if let Ok((client, mut messages)) = connect().await
            && listen_on(&client, &mut messages, &listen).await
        {
            backoff = Duration::from_millis(100);
            if !wake(&store) {
                return;
            }
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        if !wake(&store) {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Issue `LISTEN` while driving the connection; `true` once it is in effect.
async fn listen_on(
    client: &Client,
    messages: &mut BoxStream<'static, Result<AsyncMessage, tokio_postgres::Error>>,
    listen: &str,
) -> bool {
    let statement = client.batch_execute(listen);
    tokio::pin!(statement);
    loop {
        tokio::select! {
            result = &mut statement => return result.is_ok(),
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            },
        }
    }
}

/// Wake every watch of the store; `false` if the store is gone or closed.
fn wake<S: Listening>(store: &Weak<S>) -> bool {
    match store.upgrade() {
        Some(s) if !s.is_closed() => {
            s.notifier().notify_all();
            true
        }
        _ => false,
    }
}
