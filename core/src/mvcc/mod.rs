//! The multi-version key-value store (etcd's `mvcc` package).

mod index;
mod record;
pub mod store;
mod table;
pub mod types;

pub use store::{EncodeJob, MvccStore, Write};
pub use types::*;
