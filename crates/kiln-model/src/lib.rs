//! Domain types of kiln, shared by every other crate.
//!
//! Everything here is plain data plus validation: names and ARNs parse into newtypes so an
//! invalid value dies at the boundary, the Lambda limits live in [`limits`], and the names of
//! the environment variables Lambda defines live in [`env`]. Nothing in this crate does I/O.
#![forbid(unsafe_code)]

pub mod codesigning;
pub mod config;
pub mod env;
pub mod error;
pub mod error_type;
pub mod events;
pub mod layers;
pub mod limits;
pub mod names;
pub mod policy;
pub mod tags;
pub mod urls;
pub mod version;

pub use config::{FunctionConfig, FunctionState, Language, Runtime};
pub use error::ModelError;
pub use error_type::{ErrorType, FunctionErrorType};
pub use names::{FunctionName, FunctionRef, Qualifier};
pub use version::Version;

/// Where kiln pretends to live: the region and account that appear in ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub region: String,
    pub account_id: String,
}

impl Default for Partition {
    fn default() -> Self {
        Self { region: "us-east-1".into(), account_id: "000000000000".into() }
    }
}

impl Partition {
    /// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
    pub fn function_arn(&self, name: &str, qualifier: Option<&str>) -> String {
        // Appended, not `format!`ted: every invocation makes one.
        let mut arn = String::with_capacity(64 + name.len());
        for part in ["arn:aws:lambda:", &self.region, ":", &self.account_id, ":function:", name] {
            arn.push_str(part);
        }
        if let Some(q) = qualifier {
            arn.push(':');
            arn.push_str(q);
        }
        arn
    }
}
