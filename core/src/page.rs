//! Pagination shared by every `list` call.

use crate::error::{Error, ValidationError};
use crate::store::Store;
use crate::store::key::Key;
use serde::{Deserialize, Serialize};

/// The most items one page may hold.
pub const MAX_PAGE: usize = 1000;

/// One page of a listing, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T, C = crate::id::RealmId> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass this as `after` to get the next page; `None` on the last page.
    pub next: Option<C>,
}

/// Check a page size: 1 to [`MAX_PAGE`].
pub fn check_limit(limit: usize) -> Result<usize, ValidationError> {
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ValidationError::new("limit", format!("1 to {MAX_PAGE}")))
    }
}

/// Read one page of the records under `prefix`: up to `limit` (checked with
/// [`check_limit`]) records after the key `after`, each turned into an item
/// by `decode(key, value)`; `next` is `cursor_of` the last item when more
/// records follow. Every `list` call is this scan.
pub(crate) async fn scan_page<T, C>(
    store: &dyn Store,
    prefix: &Key,
    after: Option<Key>,
    limit: usize,
    decode: impl Fn(&[u8], &[u8]) -> Result<T, Error>,
    cursor_of: impl Fn(&T) -> C,
) -> Result<Page<T, C>, Error> {
    let limit = check_limit(limit)?;
    let after = after.map(Key::into_bytes);
    // One extra row tells whether another page follows.
    let rows = store
        .scan(prefix.as_bytes(), after.as_deref(), limit + 1)
        .await?;
    let more = rows.len() > limit;
    let items = rows
        .iter()
        .take(limit)
        .map(|(key, stored)| decode(key, &stored.value))
        .collect::<Result<Vec<T>, Error>>()?;
    let next = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    Ok(Page { items, next })
}
