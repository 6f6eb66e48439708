//! What the `kiln` CLI verbs and `kiln bench` share, so that neither keeps its own copy:
//!
//! - [`conn`]: one kept-alive HTTP/1.1 connection (`TCP_NODELAY`, reconnects when the server
//!   closed it), the transport of both;
//! - [`api`]: the JSON client of kiln's REST API on top of it (AWS errors as `Code: message`,
//!   waiting until a function is ready, an optional request signer);
//! - [`package`]: zips a folder with its file modes, or one executable as `bootstrap`;
//! - [`host`]: facts of the machine that `kiln serve`'s defaults come from (its memory budget).
#![forbid(unsafe_code)]

pub mod api;
pub mod conn;
pub mod host;
pub mod package;

pub use api::{Api, ApiError};
pub use conn::{Conn, ConnError};
