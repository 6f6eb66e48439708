//! Asynchronous invocation: the event invoke config operations, the old InvokeAsync, and
//! kiln's own views of the event queue (`/kiln/v1/…/events`).

use super::{
    empty, function_ref, marker, ok_json, page_json, parse_json, plain_name, read_body, small_too_large, Result,
    SMALL_BODY,
};
use crate::error::ApiError;
use crate::ReqBody;
use crate::{full, Body, Call};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use kiln_engine::{Engine, EventConfigInput, EventSummary, InvokeKind, InvokeRequest};
use kiln_model::events::EventInvokeConfig;
use kiln_model::{limits, FunctionName};
use serde_json::json;

/// The operations of this module; anything else is an unknown operation.
pub(crate) async fn dispatch(
    engine: &Engine,
    method: &Method,
    call: &Call,
    seg: &[&str],
    req: Request<ReqBody>,
) -> Result<Response<Body>> {
    match (method, seg) {
        (&Method::PUT, ["2019-09-25", "functions", name, "event-invoke-config"]) => {
            put_config(engine, call, name, req, false).await
        }
        (&Method::POST, ["2019-09-25", "functions", name, "event-invoke-config"]) => {
            put_config(engine, call, name, req, true).await
        }
        (&Method::GET, ["2019-09-25", "functions", name, "event-invoke-config"]) => {
            let r = function_ref(name, call)?;
            let (q, c) = engine.get_event_config(&r)?;
            ok_json(StatusCode::OK, config_json(engine, r.name.as_str(), &q, &c))
        }
        (&Method::DELETE, ["2019-09-25", "functions", name, "event-invoke-config"]) => {
            engine.delete_event_config(&function_ref(name, call)?)?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::GET, ["2019-09-25", "functions", name, "event-invoke-config", "list"]) => {
            let n = plain_name(name)?;
            let max = match call.query("MaxItems") {
                None => None,
                Some(v) => match v.parse::<usize>() {
                    Ok(m) if (1..=50).contains(&m) => Some(m),
                    _ => return Err(ApiError::validation(format!(
                        "1 validation error detected: Value '{v}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 50"
                    ))),
                },
            };
            let page = engine.list_event_configs(&n, marker(call), max)?;
            let items = page.items.iter().map(|(q, c)| config_json(engine, n.as_str(), q, c)).collect();
            ok_json(StatusCode::OK, page_json("FunctionEventInvokeConfigs", items, page.next_marker))
        }
        (&Method::POST, ["2014-11-13", "functions", name, "invoke-async"]) => {
            invoke_async(engine, call, name, req).await
        }
        (&Method::GET, ["kiln", "v1", "events"]) => {
            let counts = engine.event_counts().await?;
            let fns: Vec<serde_json::Value> = counts
                .iter()
                .map(|(f, c)| json!({ "FunctionName": f, "Queued": c.queued, "InFlight": c.in_flight, "Failed": c.failed }))
                .collect();
            ok_json(StatusCode::OK, json!({ "Functions": fns }))
        }
        (&Method::GET, ["kiln", "v1", "functions", name, "events"]) => {
            let n = plain_name(name)?;
            let limit = call.query("Limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(1000).clamp(1, 10_000);
            let list = engine.list_events(&n, limit).await?;
            let items: Vec<serde_json::Value> = list.iter().map(summary_json).collect();
            ok_json(StatusCode::OK, json!({ "Events": items }))
        }
        (&Method::POST, ["kiln", "v1", "functions", name, "events", "redrive"]) => {
            let n: FunctionName = plain_name(name)?;
            let id = match call.query("Id") {
                None => None,
                Some(v) => Some(
                    v.parse::<i64>().map_err(|_| ApiError::invalid_parameter(format!("'{v}' is not an event id")))?,
                ),
            };
            let count = engine.redrive_events(&n, id).await?;
            ok_json(StatusCode::OK, json!({ "Redriven": count }))
        }
        _ => Err(ApiError::unknown_operation()),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationIn {
    destination: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationConfigIn {
    on_success: Option<DestinationIn>,
    on_failure: Option<DestinationIn>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigIn {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationConfigIn>,
}

async fn put_config(
    engine: &Engine,
    call: &Call,
    name: &str,
    req: Request<ReqBody>,
    merge: bool,
) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let body = read_body(req, SMALL_BODY, small_too_large).await?;
    let input: ConfigIn = parse_json(&body)?;
    let dest = |d: Option<DestinationIn>| d.and_then(|d| d.destination).filter(|a| !a.is_empty());
    let input = EventConfigInput {
        maximum_retry_attempts: input.maximum_retry_attempts,
        maximum_event_age_secs: input.maximum_event_age_in_seconds,
        destinations: input.destination_config.map(|d| (dest(d.on_success), dest(d.on_failure))),
    };
    let (q, c) = engine.put_event_config(&r, input, merge)?;
    ok_json(StatusCode::OK, config_json(engine, r.name.as_str(), &q, &c))
}

/// `FunctionEventInvokeConfig`: `LastModified` in epoch seconds, as the model's timestamp.
fn config_json(engine: &Engine, name: &str, qualifier: &str, c: &EventInvokeConfig) -> serde_json::Value {
    let dest = |d: &Option<String>| match d {
        Some(a) => json!({ "Destination": a }),
        None => json!({}),
    };
    let mut v = json!({
        "LastModified": c.last_modified_ms as f64 / 1000.0,
        "FunctionArn": engine.partition().function_arn(name, Some(qualifier)),
        "DestinationConfig": { "OnSuccess": dest(&c.on_success), "OnFailure": dest(&c.on_failure) },
    });
    if let Some(n) = c.maximum_retry_attempts {
        v["MaximumRetryAttempts"] = json!(n);
    }
    if let Some(n) = c.maximum_event_age_secs {
        v["MaximumEventAgeInSeconds"] = json!(n);
    }
    v
}

fn summary_json(e: &EventSummary) -> serde_json::Value {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let state = e.state_name();
    let mut v = json!({
        "Id": e.id,
        "RequestId": e.request_id,
        "Qualifier": e.qualifier,
        "State": state,
        "AgeSeconds": (now - e.enqueued_ms).max(0) as f64 / 1000.0,
        "DueInSeconds": (e.due_ms - now).max(0) as f64 / 1000.0,
        "Attempts": e.attempts,
        "PayloadBytes": e.payload_bytes,
        "LastError": e.last_error,
    });
    if let Some(r) = e.record.as_deref().and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok()) {
        v["Record"] = r;
    }
    v
}

/// InvokeAsync (deprecated on Lambda, still served): the body is the event; 202 `{"Status": 202}`.
async fn invoke_async(engine: &Engine, call: &Call, name: &str, req: Request<ReqBody>) -> Result<Response<Body>> {
    let r = function_ref(name, call)?;
    let limit = limits::SYNC_PAYLOAD_MAX_BYTES;
    let payload = read_body(req, limit, || limits::request_too_large_message(limit, Some("InvokeAsync"))).await?;
    let payload = super::event_payload(payload)?;
    let out = engine
        .invoke(InvokeRequest { function: r, kind: InvokeKind::Event, payload, tail_logs: false, client_context: None })
        .await?;
    let mut resp = Response::new(full(json!({ "Status": 202 }).to_string()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&out.request_id) {
        resp.headers_mut().insert(crate::wire::REQUEST_ID, v);
    }
    Ok(resp)
}
