//! A Lambda function built with the official `lambda_runtime` crate.
//!
//! It exists so the end-to-end tests can drive a real Rust runtime through kiln: the event's
//! `action` field picks a behaviour (error, sleep, crash, echo, env dump, big response, print),
//! and without one the function greets and reports what the runtime told it about the invoke.

use std::collections::BTreeMap;
use std::time::Duration;

use lambda_runtime::{service_fn, Diagnostic, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let (payload, ctx) = event.into_parts();
    let action = payload.get("action").and_then(Value::as_str).unwrap_or("");
    match action {
        // Returning an error makes the runtime post to `/invocation/{id}/error`.
        "error" => {
            Err(Diagnostic { error_type: "HandlerError".to_owned(), error_message: "requested error".to_owned() })
        }
        "sleep" => {
            let ms = payload.get("ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!({ "slept_ms": ms }))
        }
        "exit" => {
            let code = payload.get("code").and_then(Value::as_i64).unwrap_or(1);
            std::process::exit(i32::try_from(code).unwrap_or(1));
        }
        "echo" => Ok(payload),
        "env" => {
            let vars: BTreeMap<String, String> = std::env::vars().collect();
            Ok(json!(vars))
        }
        "big" => {
            let bytes = payload.get("bytes").and_then(Value::as_u64).unwrap_or(0);
            let len = usize::try_from(bytes).unwrap_or(0);
            Ok(Value::String("x".repeat(len)))
        }
        "print" => {
            let text = payload.get("text").and_then(Value::as_str).unwrap_or("");
            println!("{text}");
            Ok(json!({ "printed": text }))
        }
        _ => {
            let name = payload.get("name").and_then(Value::as_str).unwrap_or("world");
            Ok(json!({
                "hello": name,
                // The README's `--env GREETING=hi` shows up here.
                "greeting": std::env::var("GREETING").ok(),
                "request_id": ctx.request_id,
                "function_arn": ctx.invoked_function_arn,
                "deadline_ms": ctx.deadline,
                "memory": std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").ok(),
                "version": std::env::var("AWS_LAMBDA_FUNCTION_VERSION").ok(),
                "init_type": std::env::var("AWS_LAMBDA_INITIALIZATION_TYPE").ok(),
            }))
        }
    }
}
