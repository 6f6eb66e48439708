//! kiln's durable state.
//!
//! - [`meta::MetaStore`]: function versions in SQLite (WAL, numbered migrations). Only control-plane
//!   operations write here; the invoke path never does.
//! - [`code::CodeStore`]: uploaded zips kept by SHA-256, each unpacked once into a read-only tree
//!   that every environment of that code shares.
//! - [`events::EventQueue`]: the durable queue of asynchronous invocations (`events.db`, group
//!   commit, synced before the 202).
//! - [`unzip`]: the checks and the extraction that keep a hostile zip inside its tree.
#![forbid(unsafe_code)]

pub mod code;
pub mod events;
mod extras;
mod layers;
pub mod meta;
mod opt;
pub mod unzip;
mod urls;

pub use code::{CodeHash, CodeStore};
pub use meta::MetaStore;
