//! `kiln url NAME`: shows a function's URL, creating it first when it has none
//! (GetFunctionUrlConfig, then CreateFunctionUrlConfig). `kiln deploy --url` uses the same.

use super::{Api, Endpoint};
use anyhow::Context as _;
use http::Method;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct UrlArgs {
    /// The function's name.
    pub name: String,
    /// An alias to put the URL on (default: the function's $LATEST).
    #[arg(long)]
    pub qualifier: Option<String>,
    /// Who may call a new URL: NONE (anyone) or AWS_IAM (SigV4-signed requests only).
    #[arg(long = "auth-type", default_value = "NONE", value_parser = ["NONE", "AWS_IAM"])]
    pub auth_type: String,
    /// How a new URL answers: BUFFERED (kiln serves RESPONSE_STREAM URLs buffered for now).
    #[arg(long = "invoke-mode", default_value = "BUFFERED", value_parser = ["BUFFERED", "RESPONSE_STREAM"])]
    pub invoke_mode: String,
    #[command(flatten)]
    pub endpoint: Endpoint,
}

/// The function's URL config, created with `auth_type` and `invoke_mode` if it has none.
pub(super) async fn ensure(
    api: &Api,
    name: &str,
    qualifier: Option<&str>,
    auth_type: &str,
    invoke_mode: &str,
) -> anyhow::Result<Value> {
    let path = match qualifier {
        Some(q) => format!("/2021-10-31/functions/{name}/url?Qualifier={q}"),
        None => format!("/2021-10-31/functions/{name}/url"),
    };
    match api.call(Method::GET, &path, None).await {
        Ok(c) => Ok(c),
        // No URL config yet (or no function: then creating it says so).
        Err(e) if e.code() == Some(kiln_api::error::code::RESOURCE_NOT_FOUND) => {
            let body = json!({ "AuthType": auth_type, "InvokeMode": invoke_mode });
            api.call(Method::POST, &path, Some(body)).await.context("cannot create the function URL")
        }
        Err(e) => Err(e.into()),
    }
}

/// The URL, then the path form that works without name resolution of `*.localhost`.
pub(super) fn print(api: &Api, c: &Value) {
    let url = c["FunctionUrl"].as_str().unwrap_or_default();
    println!("{url}");
    let id = url.strip_prefix("http://").and_then(|h| h.split('.').next()).unwrap_or_default();
    eprintln!(
        "auth {}, {}; also reachable as {}/lambda-url/{id}/",
        c["AuthType"].as_str().unwrap_or_default(),
        c["InvokeMode"].as_str().unwrap_or_default(),
        api.base()
    );
}

pub async fn run(args: UrlArgs) -> anyhow::Result<std::process::ExitCode> {
    let api = args.endpoint.api()?;
    let name = super::plain_name(&args.name)?;
    let c = ensure(&api, &name, args.qualifier.as_deref(), &args.auth_type, &args.invoke_mode).await?;
    print(&api, &c);
    Ok(std::process::ExitCode::SUCCESS)
}
