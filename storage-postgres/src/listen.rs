//! Cross-process change notification with `LISTEN/NOTIFY`, backed by a
//! timer.
//!
//! **Sending.** No write transaction notifies: PostgreSQL would hold its
//! database-wide notify lock from that commit's pre-commit until its commit
//! record is flushed, serialising every writing commit of the database.
//! Instead, once a writing commit has returned, the store signals its
//! announcer task, which sends `SELECT pg_notify(channel, '')` as a
//! transaction of its own on a pooled connection — one for all the commits
//! signalled while the previous one was in flight or in the 5 ms gap kept
//! after it (so a store sends at most about 200 a second). That transaction writes
//! no WAL of its own, so it is not flushed and holds the lock only for an
//! instant. The payload is empty: watches were never ordered or resumed by
//! it, but by the event records' own per-group sequence numbers.
//!
//! **Receiving.** Each [`PostgresStore`] that has watches keeps one
//! dedicated connection (outside the pool) that `LISTEN`s on the channel
//! and wakes every local watch on each notification, and once each time it
//! (re)establishes `LISTEN` (a notification sent while no listener was
//! connected is lost; the subscriber's re-read replays what it missed).
//!
//! **The timer.** A notification can still be lost after its commit: the
//! writer crashed, lost its connection or was dropped between `COMMIT` and
//! `NOTIFY`. So every poll interval the listener reads
//! `pg_current_snapshot()` and wakes every watch if it differs from the
//! previous reading. A commit that became visible between two readings
//! changes the snapshot (its transaction id is at or past the first
//! reading's `xmax`, or in its in-progress list, and neither in the second),
//! so it wakes the watches at the next reading at the latest: at most one
//! interval (plus one round trip) late, never lost. Transaction ids are
//! cluster-wide, so any write in the cluster may wake the watches
//! (spuriously, which watches allow); a cluster without writes wakes
//! nobody. A server without `pg_current_snapshot` (before PostgreSQL 13)
//! gets a wake-up every interval instead. Together with the immediate
//! in-process wake-up after a local commit, that keeps the
//! [`watch`](keystead::store::watch) promise.
//!
//! [`PostgresStore`]: crate::PostgresStore

use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use keystead::store::watch::Notifier;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;
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

/// What the listener and the announcer need from their store; a weak
/// reference, so the tasks end when the store is dropped.
pub(crate) trait Listening: Send + Sync + 'static {
    /// Where wake-ups go.
    fn notifier(&self) -> &Notifier;
    /// Whether the store was closed (the tasks then end).
    fn is_closed(&self) -> bool;
    /// Where the announcer gets a connection.
    fn pool(&self) -> &Pool;
    /// The `NOTIFY` statement and its channel parameter.
    fn notify_statement(&self) -> (&str, &str);
}

/// The asynchronous messages of a listener connection.
type Messages = BoxStream<'static, Result<AsyncMessage, tokio_postgres::Error>>;

/// Run until the store is closed or dropped: connect, `LISTEN`, take the
/// first snapshot reading, wake every watch (replay), then wake them on
/// every notification and whenever the snapshot changed from one poll to
/// the next; reconnect with back-off when the connection fails.
pub(crate) async fn run<S: Listening>(
    store: Weak<S>,
    connect: Connector,
    channel: String,
    poll: Duration,
) {
    let listen = format!("LISTEN {}", quoted(&channel));
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.upgrade() {
            Some(s) if !s.is_closed() => {}
            _ => return,
        }
        if let Ok((client, mut messages)) = connect().await
            && let Some(Ok(())) = driving(&mut messages, client.batch_execute(&listen)).await
            && let Some(mut last) = snapshot(&client, &mut messages).await
        {
            backoff = Duration::from_millis(100);
            // The reading above comes first: whatever committed before it
            // is seen by the re-read this wake-up causes, whatever after it
            // changes a later reading.
            if !wake(&store) {
                return;
            }
            loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(Ok(AsyncMessage::Notification(_))) => {
                            if !wake(&store) {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                    () = tokio::time::sleep(poll) => {
                        let Some(now) = snapshot(&client, &mut messages).await else {
                            break;
                        };
                        // `None`: the server cannot tell, so assume a change.
                        if (now.is_none() || now != last) && !wake(&store) {
                            return;
                        }
                        last = now;
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The server's current snapshot as text (`xmin:xmax:xip,…`): `Some(None)`
/// if the server has no `pg_current_snapshot` (or refuses it), `None` if
/// the connection failed. Notifications arriving meanwhile still wake.
async fn snapshot(client: &Client, messages: &mut Messages) -> Option<Option<String>> {
    let read = client.query_one("SELECT pg_current_snapshot()::text", &[]);
    match driving(messages, read).await? {
        Ok(row) => Some(row.try_get::<_, String>(0).ok()),
        Err(e) if e.as_db_error().is_some() => Some(None),
        Err(_) => None,
    }
}

/// Run `request` on the listener connection while driving it: its result,
/// or `None` if the connection ended first. A notification that arrives
/// meanwhile is dropped here — callers wake every watch right after.
async fn driving<T>(
    messages: &mut Messages,
    request: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Option<Result<T, tokio_postgres::Error>> {
    tokio::pin!(request);
    loop {
        tokio::select! {
            result = &mut request => return Some(result),
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            },
        }
    }
}

/// The announcer: for each burst of signals, one `NOTIFY` on a pooled
/// connection, until the store is closed or dropped. A failed `NOTIFY` is
/// not retried: its commits already returned, and the listeners' timer
/// catches them.
pub(crate) async fn announce<S: Listening>(store: Weak<S>, pending: Arc<Notify>) {
    loop {
        pending.notified().await;
        let Some(store) = store.upgrade() else {
            return;
        };
        if store.is_closed() {
            return;
        }
        let Ok(client) = store.pool().get().await else {
            continue;
        };
        let (statement, channel) = store.notify_statement();
        let sent = match client.prepare_cached(statement).await {
            Ok(statement) => client.execute(&statement, &[&channel]).await.map(drop),
            Err(e) => Err(e),
        };
        if sent.is_err() {
            // Possibly dead: not handed to the next caller.
            drop(deadpool_postgres::Object::take(client));
        }
        drop(store);
        // Commits signalled meanwhile share the next NOTIFY: a steady
        // writer costs at most one small transaction per gap, not one per
        // commit (measured: one per commit took a third of a lone writer's
        // throughput on 2 cores), for a few milliseconds of latency.
        tokio::time::sleep(ANNOUNCE_GAP).await;
    }
}

/// The least time between two `NOTIFY`s of one store.
pub(crate) const ANNOUNCE_GAP: Duration = Duration::from_millis(5);

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
