//! Pagination shared by every `list` call.

use crate::error::ValidationError;
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
