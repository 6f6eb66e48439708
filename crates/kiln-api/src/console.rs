//! The web console at `GET /`: one HTML page, its script and its style sheet, embedded in the
//! binary (no CDN, no build step), plus the small JSON endpoints only it uses.
//!
//! The page reads everything else through the Lambda REST API and `/kiln/v1` like any client:
//! ListFunctions, GetFunction, versions, aliases and concurrency for the functions view;
//! `/kiln/v1/functions/{name}/environments` for live environments;
//! `/kiln/v1/functions/{name}/samples` (the engine's per-second ring) for the charts;
//! `/kiln/v1/functions/{name}/logs?follow=true` for the log; Invoke with `LogType: Tail` for the
//! invoke panel. `/kiln/v1/console` tells the page whether it may invoke.

use crate::error::ApiError;
use crate::{full, Body, Call};
use http::{HeaderValue, Response, StatusCode};
use kiln_engine::Engine;
use kiln_model::FunctionRef;
use serde_json::json;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// What the console may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleMode {
    /// Served, and may invoke functions.
    #[default]
    On,
    /// Served, but shows only: the invoke panel is disabled.
    ReadOnly,
    /// Not served.
    Off,
}

impl ConsoleMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::ReadOnly => "read-only",
            Self::Off => "off",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "on" => Some(Self::On),
            "read-only" => Some(Self::ReadOnly),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

/// Answers the console's own paths (`/`, `/console/…`, `/kiln/v1/console`), or `None` when the
/// request is not one of them. `auth_region`: with `--auth-keys`, the region the page signs its
/// API calls for (it asks for a key and signs every call; these paths hold no data).
pub(crate) fn asset(mode: ConsoleMode, auth_region: Option<&str>, seg: &[&str]) -> Option<Response<Body>> {
    let (body, content_type) = match seg {
        [] | ["console" | "index.html"] => (INDEX_HTML, "text/html; charset=utf-8"),
        ["console", "app.js"] => (APP_JS, "text/javascript; charset=utf-8"),
        ["console", "app.css"] => (APP_CSS, "text/css; charset=utf-8"),
        ["kiln", "v1", "console"] => {
            let mut v = json!({ "Mode": mode.as_str(), "Auth": auth_region.is_some() });
            if let Some(region) = auth_region {
                v["Region"] = json!(region);
            }
            let mut r = Response::new(full(v.to_string()));
            r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return Some(r);
        }
        _ => return None,
    };
    if mode == ConsoleMode::Off {
        return Some(crate::error_response(&ApiError::unknown_operation()));
    }
    let mut r = Response::new(full(body));
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page loads nothing from elsewhere; say so, so a browser refuses it if it tried.
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    h.insert(http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(r)
}

/// `GET /kiln/v1/functions/{name}/samples?seconds=N`: the function's per-second samples.
pub(crate) fn samples(engine: &Engine, call: &Call, name: &str) -> Result<Response<Body>, ApiError> {
    let r = FunctionRef::parse(name, None)?;
    let seconds = match call.query("seconds") {
        None => 120,
        Some(s) => {
            s.parse::<usize>().ok().filter(|n| (1..=kiln_engine::metrics::RING_SECS).contains(n)).ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "seconds must be a whole number from 1 to {}",
                    kiln_engine::metrics::RING_SECS
                ))
            })?
        }
    };
    let samples = engine.samples(&r.name, seconds)?;
    let pct = |p: Option<(f64, f64)>, i: usize| p.map(|(a, b)| if i == 0 { a } else { b });
    let out: Vec<serde_json::Value> = samples
        .iter()
        .map(|s| {
            json!({
                "T": s.sec,
                "Invocations": s.invocations,
                "Errors": s.errors,
                "Cold": s.cold,
                "Warm": s.warm,
                "ColdP50Ms": pct(s.cold_ms, 0),
                "ColdP99Ms": pct(s.cold_ms, 1),
                "WarmP50Ms": pct(s.warm_ms, 0),
                "WarmP99Ms": pct(s.warm_ms, 1),
            })
        })
        .collect();
    let mut resp = Response::new(full(json!({ "Samples": out }).to_string()));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
