//! The Lambda Runtime API (2018-06-01) of one execution environment.
//!
//! A [`RuntimeApi`] is created per environment and served on the listener the sandbox backend
//! made for it. The engine talks to it through three calls: [`RuntimeApi::wait_init`] (Init ends
//! at the runtime's first `next`, or fails at `init/error`), [`RuntimeApi::dispatch`] (hand an
//! event to the runtime; the returned receiver yields the runtime's answer) and
//! [`RuntimeApi::close`].
//!
//! The state machine of docs/runtime-api.md ("States") lives in [`state`], apart from HTTP, so that it can
//! be tested on its own; [`server`] is the thin hyper layer in front of it. Freezing is decided
//! here because only the Runtime API knows the moment the runtime is back in `next` with nothing
//! to do: that is when the environment is frozen, exactly as Lambda does it.
#![forbid(unsafe_code)]

pub mod rewake;
mod server;
pub mod state;
pub mod stream;
pub mod wire;

pub use server::{
    live_connections, set_connection_limit, ENV_BODY_BUDGET, HEADER_READ_TIMEOUT, INIT_ERROR_BODY_TIMEOUT,
    MAX_CONNECTIONS, READ_BUF_BYTES,
};
pub use state::{Freezer, InitOutcome, Invocation, Outcome, RuntimeApi};
pub use stream::{ResponseStream, StreamEnd, StreamEvent, STREAM_CHANNEL_CHUNKS};
