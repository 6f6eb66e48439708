//! Names of the environment variables Lambda sets in an execution environment
//! (docs/runtime-api.md, "The environment's variables").

pub const RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";
pub const HANDLER: &str = "_HANDLER";
pub const TASK_ROOT: &str = "LAMBDA_TASK_ROOT";
pub const RUNTIME_DIR: &str = "LAMBDA_RUNTIME_DIR";
pub const REGION: &str = "AWS_REGION";
pub const DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
pub const EXECUTION_ENV: &str = "AWS_EXECUTION_ENV";
pub const FUNCTION_NAME: &str = "AWS_LAMBDA_FUNCTION_NAME";
pub const FUNCTION_MEMORY_SIZE: &str = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE";
pub const FUNCTION_VERSION: &str = "AWS_LAMBDA_FUNCTION_VERSION";
pub const INITIALIZATION_TYPE: &str = "AWS_LAMBDA_INITIALIZATION_TYPE";
pub const LOG_GROUP_NAME: &str = "AWS_LAMBDA_LOG_GROUP_NAME";
pub const LOG_STREAM_NAME: &str = "AWS_LAMBDA_LOG_STREAM_NAME";
pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
pub const TRACE_ID: &str = "_X_AMZN_TRACE_ID";
pub const TZ: &str = "TZ";
pub const LANG: &str = "LANG";
pub const PATH: &str = "PATH";
pub const LD_LIBRARY_PATH: &str = "LD_LIBRARY_PATH";
pub const LOG_FORMAT: &str = "AWS_LAMBDA_LOG_FORMAT";
pub const LOG_LEVEL: &str = "AWS_LAMBDA_LOG_LEVEL";
pub const XRAY_CONTEXT_MISSING: &str = "AWS_XRAY_CONTEXT_MISSING";
/// Python runtimes only: `$LAMBDA_RUNTIME_DIR`, as Lambda sets it (unreserved).
pub const PYTHONPATH: &str = "PYTHONPATH";

/// Keys a user may not set through `Environment.Variables`.
pub const RESERVED: &[&str] = &[
    RUNTIME_API,
    HANDLER,
    TASK_ROOT,
    RUNTIME_DIR,
    REGION,
    DEFAULT_REGION,
    EXECUTION_ENV,
    FUNCTION_NAME,
    FUNCTION_MEMORY_SIZE,
    FUNCTION_VERSION,
    INITIALIZATION_TYPE,
    LOG_GROUP_NAME,
    LOG_STREAM_NAME,
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    TRACE_ID,
    TZ,
];

pub const TASK_ROOT_PATH: &str = "/var/task";
pub const RUNTIME_DIR_PATH: &str = "/var/runtime";
pub const DEFAULT_PATH_VALUE: &str = "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin";
pub const DEFAULT_LD_LIBRARY_PATH: &str =
    "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib";
