//! Lambda's limits for standard functions (docs/runtime-api.md, "The environment's limits").

pub const MEMORY_MIN_MB: u32 = 128;
pub const MEMORY_MAX_MB: u32 = 10_240;
pub const MEMORY_DEFAULT_MB: u32 = 128;
pub const TIMEOUT_MIN_SECS: u32 = 1;
pub const TIMEOUT_MAX_SECS: u32 = 900;
pub const TIMEOUT_DEFAULT_SECS: u32 = 3;
pub const EPHEMERAL_MIN_MB: u32 = 512;
pub const EPHEMERAL_MAX_MB: u32 = 10_240;
pub const EPHEMERAL_DEFAULT_MB: u32 = 512;
pub const DESCRIPTION_MAX_CHARS: usize = 256;
pub const HANDLER_MAX_CHARS: usize = 128;
/// Aggregate size of the environment variables, measured on the compact JSON of the map.
pub const ENV_VARS_MAX_BYTES: usize = 4 * 1024;
/// A zip uploaded directly (`CodeSizeZipped`).
pub const ZIP_MAX_BYTES: u64 = 52_428_800;
/// Unpacked code (`CodeSizeUnzipped`).
pub const UNZIPPED_MAX_BYTES: u64 = 262_144_000;
/// Bodies of CreateFunction/UpdateFunctionCode: a 50 MB zip, base64-encoded, plus JSON.
pub const CREATE_BODY_MAX_BYTES: usize = 69_905_067;
/// Request payload of a synchronous invoke.
pub const SYNC_PAYLOAD_MAX_BYTES: usize = 6_291_456;
/// Request payload of an `Event` invoke.
pub const ASYNC_PAYLOAD_MAX_BYTES: usize = 1_048_576;
/// Response payload a runtime may post (RIE's `6 * 1024 * 1024 + 100`).
pub const RESPONSE_MAX_BYTES: usize = 6_291_556;
/// How long an on-demand Init may take before it is reported as timed out.
pub const INIT_TIMEOUT_SECS: u64 = 10;
/// `X-Amz-Log-Result` carries at most this many bytes of the invocation's log.
pub const LOG_TAIL_BYTES: usize = 4096;
pub const MAX_PROCESSES: u32 = 1024;
pub const MAX_OPEN_FILES: u64 = 1024;
/// Memory that buys one full vCPU.
pub const MB_PER_VCPU: u32 = 1769;
/// Account-wide concurrency when nothing else is configured.
pub const ACCOUNT_CONCURRENCY_DEFAULT: u32 = 1000;
/// `ListFunctions` never returns more than this many per page.
pub const LIST_PAGE_MAX: usize = 50;
/// A streamed response (`Lambda-Runtime-Function-Response-Mode: streaming`): Lambda's limit of
/// 200 MB. Past it the stream ends with `Function.ResponseSizeTooLarge`.
pub const STREAMED_RESPONSE_MAX_BYTES: u64 = 200 * 1024 * 1024;

/// What a request body over `limit` bytes is refused with (`RequestEntityTooLargeException`),
/// by the API when it reads the body and by the engine when it checks a payload, so both say
/// the same. `operation` names the API operation when Lambda names it.
pub fn request_too_large_message(limit: impl std::fmt::Display, operation: Option<&str>) -> String {
    match operation {
        Some(op) => format!("Request must be smaller than {limit} bytes for the {op} operation"),
        None => format!("Request must be smaller than {limit} bytes"),
    }
}
