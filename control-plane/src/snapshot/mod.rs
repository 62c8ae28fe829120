//! Snapshots: built from the store, checked for consistency, published to subscribers only
//! when their version changes.

mod build;
mod cache;
pub mod roll;

pub use build::{BuildSettings, SnapshotError, build};
pub use cache::{SnapshotCache, SnapshotRx};
