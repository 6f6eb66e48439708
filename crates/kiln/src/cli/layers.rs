//! `kiln layer publish` and `kiln layer ls`: PublishLayerVersion and ListLayers.

use super::{package, Endpoint};
use anyhow::Context as _;
use base64::Engine as _;
use http::Method;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum LayerCommand {
    /// Publish a new version of a layer from a .zip or a folder (zipped on the fly).
    Publish {
        name: String,
        path: PathBuf,
        #[arg(long)]
        description: Option<String>,
        /// A compatible runtime (e.g. provided.al2023); repeat for more.
        #[arg(long = "compatible-runtime", value_name = "RUNTIME")]
        compatible_runtimes: Vec<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List layers with their latest version.
    Ls {
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

pub async fn run(cmd: LayerCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        LayerCommand::Publish { name, path, description, compatible_runtimes, endpoint } => {
            let api = endpoint.api()?;
            let zip = package(&path)?;
            let mut body = json!({ "Content": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(&zip) } });
            if let Some(d) = description {
                body["Description"] = json!(d);
            }
            if !compatible_runtimes.is_empty() {
                body["CompatibleRuntimes"] = json!(compatible_runtimes);
            }
            let out = api.call(Method::POST, &format!("/2018-10-31/layers/{name}/versions"), Some(body)).await?;
            println!(
                "published {} ({} bytes, sha256 {})",
                out["LayerVersionArn"].as_str().unwrap_or(&name),
                out["Content"]["CodeSize"],
                out["Content"]["CodeSha256"].as_str().unwrap_or("")
            );
        }
        LayerCommand::Ls { endpoint } => {
            let api = endpoint.api()?;
            let mut marker: Option<String> = None;
            println!("{:<40} {:>7}  {:<24}  LATEST VERSION ARN", "NAME", "VERSION", "CREATED");
            loop {
                let path = match &marker {
                    Some(m) => format!("/2018-10-31/layers?Marker={m}"),
                    None => "/2018-10-31/layers".to_string(),
                };
                let page = api.call(Method::GET, &path, None).await.context("cannot list layers")?;
                for l in page["Layers"].as_array().into_iter().flatten() {
                    let v = &l["LatestMatchingVersion"];
                    println!(
                        "{:<40} {:>7}  {:<24}  {}",
                        l["LayerName"].as_str().unwrap_or(""),
                        v["Version"],
                        v["CreatedDate"].as_str().unwrap_or(""),
                        v["LayerVersionArn"].as_str().unwrap_or("")
                    );
                }
                match page["NextMarker"].as_str() {
                    Some(m) => marker = Some(m.to_string()),
                    None => break,
                }
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
