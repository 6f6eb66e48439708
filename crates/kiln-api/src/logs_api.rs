//! The CloudWatch Logs API (2014-03-28) for function logs, on kiln's own port.
//!
//! AWS JSON 1.1: `POST /` with `X-Amz-Target: Logs_20140328.<Operation>` and a JSON body; answers
//! are JSON, errors are `{"__type": …, "message": …}` with status 400. So
//! `boto3.client("logs", endpoint_url=…)` and `aws logs … --endpoint-url …` work. A function's log
//! group is its `LoggingConfig.LogGroup` (`/aws/lambda/<name>` by default); it exists once the
//! function has logged. The events come from the engine's log store ([`kiln_engine::logs`]),
//! read a page at a time; paging tokens carry byte offsets of records (`f/…`, `b/…` as AWS forms
//! them) or positions in lists, and every token is checked before use.

use crate::ReqBody;
use crate::{full, Body};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use kiln_engine::log_filter::FilterPattern;
use kiln_engine::log_store::{self, Event, EventQuery, Start, StreamInfo};
use kiln_engine::Engine;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

/// The header that names the operation.
pub const TARGET: &str = "x-amz-target";
const TARGET_PREFIX: &str = "Logs_20140328.";
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const REQUEST_ID: &str = "x-amzn-requestid";

const INVALID_PARAMETER: &str = "InvalidParameterException";
const NOT_FOUND: &str = "ResourceNotFoundException";
const UNKNOWN_OPERATION: &str = "UnknownOperationException";
const SERIALIZATION: &str = "SerializationException";

const GROUP_NOT_FOUND: &str = "The specified log group does not exist.";
const STREAM_NOT_FOUND: &str = "The specified log stream does not exist.";
const BAD_TOKEN: &str = "The specified nextToken is invalid.";

/// Retention values CloudWatch accepts, in days.
const RETENTION_DAYS: [u32; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];
/// A page of events holds at most this many bytes (messages plus 26 bytes each), as on AWS.
const PAGE_BYTES: usize = 1024 * 1024;
const MAX_EVENTS: i64 = 10_000;
const MAX_LIST: i64 = 50;
const BODY_LIMIT: usize = 1024 * 1024;

/// A Logs API error on its way to the client.
struct LogsError {
    code: &'static str,
    message: String,
}

type Result<T> = std::result::Result<T, LogsError>;

/// An answer: a JSON value, or JSON already written (large pages).
enum Answer {
    Json(Value),
    Raw(String),
}

fn invalid(message: impl Into<String>) -> LogsError {
    LogsError { code: INVALID_PARAMETER, message: message.into() }
}

fn not_found(message: &str) -> LogsError {
    LogsError { code: NOT_FOUND, message: message.into() }
}

/// Whether a request is a Logs API call: `POST /` that names a target.
pub fn is_logs_call<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::POST && req.uri().path() == "/" && req.headers().contains_key(TARGET)
}

/// Answers one Logs API call.
pub async fn handle(engine: &Engine, req: Request<ReqBody>, request_id: &str) -> Response<Body> {
    let result = answer(engine, req).await;
    let (status, body) = match result {
        Ok(Answer::Json(v)) => (StatusCode::OK, v.to_string()),
        Ok(Answer::Raw(s)) => (StatusCode::OK, s),
        Err(e) => (StatusCode::BAD_REQUEST, json!({ "__type": e.code, "message": e.message }).to_string()),
    };
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

async fn answer(engine: &Engine, req: Request<ReqBody>) -> Result<Answer> {
    let target = req.headers().get(TARGET).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let Some(op) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(LogsError { code: UNKNOWN_OPERATION, message: format!("Unknown operation {target}") });
    };
    let known = [
        "DescribeLogGroups",
        "DescribeLogStreams",
        "GetLogEvents",
        "FilterLogEvents",
        "PutRetentionPolicy",
        "DeleteRetentionPolicy",
        "DeleteLogGroup",
    ];
    if !known.contains(&op) {
        return Err(LogsError { code: UNKNOWN_OPERATION, message: format!("Unknown operation {op}") });
    }
    if hyper::body::Body::size_hint(req.body()).lower() > BODY_LIMIT as u64 {
        return Err(invalid("The request body is too large."));
    }
    let body = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Err(invalid("The request body is too large.")),
    };
    let input: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(LogsError { code: SERIALIZATION, message: "The request body is not a JSON object.".into() })
            }
        }
    };
    let input = Input(input);
    // Lines still on their way to the files are written first, so a read after a call sees it.
    engine.logs().flush().await;
    let json = match op {
        "DescribeLogGroups" => describe_log_groups(engine, &input),
        "DescribeLogStreams" => {
            let (e, i) = (engine.clone(), input);
            blocking(move || describe_log_streams(&e, &i)).await
        }
        "GetLogEvents" => {
            let (e, i) = (engine.clone(), input);
            return blocking(move || get_log_events(&e, &i)).await;
        }
        "FilterLogEvents" => {
            let (e, i) = (engine.clone(), input);
            blocking(move || filter_log_events(&e, &i)).await
        }
        "PutRetentionPolicy" => put_retention(engine, &input).await,
        "DeleteRetentionPolicy" => delete_retention(engine, &input).await,
        _ => delete_log_group(engine, &input).await,
    };
    json.map(Answer::Json)
}

/// File reads run off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(LogsError { code: "ServiceUnavailableException", message: "internal error".into() }))
}

/// The request's members, with AWS's checks.
struct Input(Map<String, Value>);

impl Input {
    fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(LogsError { code: SERIALIZATION, message: format!("{key} must be a string") }),
        }
    }

    fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| LogsError { code: SERIALIZATION, message: format!("{key} must be an integer") }),
            Some(_) => Err(LogsError { code: SERIALIZATION, message: format!("{key} must be a number") }),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(LogsError { code: SERIALIZATION, message: format!("{key} must be a boolean") }),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => {
                a.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>().map(Some).ok_or_else(|| {
                    LogsError { code: SERIALIZATION, message: format!("{key} must be a list of strings") }
                })
            }
            Some(_) => Err(LogsError { code: SERIALIZATION, message: format!("{key} must be a list") }),
        }
    }

    /// `limit` between 1 and `max`, or `default`.
    fn limit(&self, max: i64, default: i64) -> Result<usize> {
        match self.int("limit")? {
            None => Ok(default as usize),
            Some(n) if n < 1 => Err(invalid(format!(
                "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"
            ))),
            Some(n) if n > max => Err(invalid(format!(
                "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value less than or equal to {max}"
            ))),
            Some(n) => Ok(n as usize),
        }
    }

    /// The log group named by `logGroupName` or `logGroupIdentifier` (a name or an ARN).
    fn group(&self) -> Result<String> {
        let name = self.string("logGroupName")?;
        let id = self.string("logGroupIdentifier")?;
        match (name, id) {
            (Some(_), Some(_)) => Err(invalid("LogGroup name and LogGroup ARN are mutually exclusive parameters.")),
            (Some(n), None) => Ok(n.to_string()),
            (None, Some(id)) => Ok(group_of_arn(id).to_string()),
            (None, None) => Err(invalid(
                "1 validation error detected: Value null at 'logGroupName' failed to satisfy constraint: Member must not be null",
            )),
        }
    }
}

/// `arn:aws:logs:<region>:<account>:log-group:<name>[:*]` → `<name>`; a name stays a name.
fn group_of_arn(id: &str) -> &str {
    match id.split_once(":log-group:") {
        Some((prefix, rest)) if prefix.starts_with("arn:") => rest.strip_suffix(":*").unwrap_or(rest),
        _ => id,
    }
}

/// The functions writing to an existing log group.
fn group_functions(engine: &Engine, group: &str) -> Result<Vec<String>> {
    let functions: Vec<String> = engine
        .log_groups()
        .remove(group)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| engine.logs().has_group(f))
        .collect();
    if functions.is_empty() {
        return Err(not_found(GROUP_NOT_FOUND));
    }
    Ok(functions)
}

fn group_arn(engine: &Engine, group: &str) -> String {
    let p = engine.partition();
    format!("arn:aws:logs:{}:{}:log-group:{group}", p.region, p.account_id)
}

/// `i/<position>` in a listing.
fn list_token(token: Option<&str>) -> Result<usize> {
    match token {
        None => Ok(0),
        Some(t) => t.strip_prefix("i/").and_then(|n| n.parse().ok()).ok_or_else(|| invalid(BAD_TOKEN)),
    }
}

fn describe_log_groups(engine: &Engine, input: &Input) -> Result<Value> {
    let prefix = input.string("logGroupNamePrefix")?;
    let pattern = input.string("logGroupNamePattern")?;
    if prefix.is_some() && pattern.is_some() {
        return Err(invalid("LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters."));
    }
    let limit = input.limit(MAX_LIST, MAX_LIST)?;
    let start = list_token(input.string("nextToken")?)?;
    let groups: Vec<(String, Vec<String>)> = engine
        .log_groups()
        .into_iter()
        .filter(|(g, _)| prefix.is_none_or(|p| g.starts_with(p)) && pattern.is_none_or(|p| g.contains(p)))
        .filter_map(|(g, fns)| {
            let fns: Vec<String> = fns.into_iter().filter(|f| engine.logs().has_group(f)).collect();
            (!fns.is_empty()).then_some((g, fns))
        })
        .collect();
    if start > groups.len() {
        return Err(invalid(BAD_TOKEN));
    }
    let page: Vec<Value> = groups
        .iter()
        .skip(start)
        .take(limit)
        .map(|(g, fns)| {
            let streams: Vec<StreamInfo> = fns.iter().flat_map(|f| engine.logs().streams(f)).collect();
            let created = streams.iter().map(|s| s.modified_ms).min().unwrap_or_else(now_ms);
            let arn = group_arn(engine, g);
            let mut v = json!({
                "logGroupName": g,
                "creationTime": created,
                "metricFilterCount": 0,
                "arn": format!("{arn}:*"),
                "logGroupArn": arn,
                "storedBytes": streams.iter().map(|s| s.bytes).sum::<u64>(),
                "logGroupClass": "STANDARD",
            });
            if let Some(days) = fns.iter().find_map(|f| engine.logs().retention_days(f)) {
                v["retentionInDays"] = json!(days);
            }
            v
        })
        .collect();
    let mut out = json!({ "logGroups": page });
    if start + limit < groups.len() {
        out["nextToken"] = json!(format!("i/{}", start + limit));
    }
    Ok(out)
}

/// The streams of a group: (function, stream), by stream name.
fn group_streams(engine: &Engine, group: &str) -> Result<Vec<StreamInfo>> {
    let mut streams: Vec<StreamInfo> =
        group_functions(engine, group)?.iter().flat_map(|f| engine.logs().streams(f)).collect();
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(streams)
}

/// The first and last event of a stream (timestamps and the last ingestion time).
fn stream_bounds(s: &StreamInfo) -> (Option<i64>, Option<i64>, Option<i64>) {
    let mut first = None;
    let _ = log_store::scan_forward(s, 0, |e| {
        first = Some(e.timestamp_ms);
        false
    });
    let mut last = None;
    let _ = log_store::scan_backward(s, u64::MAX, |e| {
        last = Some((e.timestamp_ms, e.ingestion_ms));
        false
    });
    (first, last.map(|l| l.0), last.map(|l| l.1))
}

fn describe_log_streams(engine: &Engine, input: &Input) -> Result<Value> {
    let group = input.group()?;
    let prefix = input.string("logStreamNamePrefix")?;
    let order = input.string("orderBy")?.unwrap_or("LogStreamName");
    if !matches!(order, "LogStreamName" | "LastEventTime") {
        return Err(invalid(format!(
            "1 validation error detected: Value '{order}' at 'orderBy' failed to satisfy constraint: Member must satisfy enum value set: [LogStreamName, LastEventTime]"
        )));
    }
    if order == "LastEventTime" && prefix.is_some() {
        return Err(invalid("Cannot order by LastEventTime with a logStreamNamePrefix."));
    }
    let descending = input.bool("descending")?.unwrap_or(false);
    let limit = input.limit(MAX_LIST, MAX_LIST)?;
    let start = list_token(input.string("nextToken")?)?;
    let mut streams: Vec<StreamInfo> =
        group_streams(engine, &group)?.into_iter().filter(|s| prefix.is_none_or(|p| s.name.starts_with(p))).collect();
    if order == "LastEventTime" {
        streams.sort_by(|a, b| (a.modified_ms, &a.name).cmp(&(b.modified_ms, &b.name)));
    }
    if descending {
        streams.reverse();
    }
    if start > streams.len() {
        return Err(invalid(BAD_TOKEN));
    }
    let arn = group_arn(engine, &group);
    let page: Vec<Value> = streams
        .iter()
        .skip(start)
        .take(limit)
        .map(|s| {
            let (first, last, ingested) = stream_bounds(s);
            let mut v = json!({
                "logStreamName": s.name,
                "creationTime": first.unwrap_or(s.modified_ms),
                "arn": format!("{arn}:log-stream:{}", s.name),
                "storedBytes": 0,
            });
            if let (Some(f), Some(l), Some(i)) = (first, last, ingested) {
                v["firstEventTimestamp"] = json!(f);
                v["lastEventTimestamp"] = json!(l);
                v["lastIngestionTime"] = json!(i);
            }
            v
        })
        .collect();
    let mut out = json!({ "logStreams": page });
    if start + limit < streams.len() {
        out["nextToken"] = json!(format!("i/{}", start + limit));
    }
    Ok(out)
}

/// `f/<56 digits>` (forward from a record) or `b/<56 digits>` (backward from one), optionally
/// followed by `/s` as newer AWS tokens are.
fn event_token(token: &str, stream: &StreamInfo) -> Result<Start> {
    let (dir, rest) = token.split_at_checked(2).ok_or_else(|| invalid(BAD_TOKEN))?;
    let digits = rest.strip_suffix("/s").unwrap_or(rest);
    if digits.is_empty() || digits.len() > 56 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(BAD_TOKEN));
    }
    let offset: u64 = digits.parse().map_err(|_| invalid(BAD_TOKEN))?;
    // A token points at a record boundary of this stream, never past its end.
    if offset > stream.bytes || !at_boundary(stream, offset) {
        return Err(invalid(BAD_TOKEN));
    }
    match dir {
        "f/" => Ok(Start::Forward(offset)),
        "b/" => Ok(Start::Backward(offset)),
        _ => Err(invalid(BAD_TOKEN)),
    }
}

fn at_boundary(stream: &StreamInfo, offset: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    if offset == 0 {
        return true;
    }
    let Ok(mut f) = std::fs::File::open(&stream.path) else { return false };
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset - 1)).is_ok() && f.read_exact(&mut b).is_ok() && b[0] == b'\n'
}

fn time_range(input: &Input) -> Result<(Option<i64>, Option<i64>)> {
    let start = input.int("startTime")?;
    let end = input.int("endTime")?;
    for (name, v) in [("startTime", start), ("endTime", end)] {
        if v.is_some_and(|v| v < 0) {
            return Err(invalid(format!(
                "1 validation error detected: Value '{}' at '{name}' failed to satisfy constraint: Member must have value greater than or equal to 0",
                v.unwrap_or(0)
            )));
        }
    }
    Ok((start, end))
}

/// What a message looks like on the wire: Lambda's events end with a newline.
fn wire_message(e: &Event) -> String {
    let mut m = String::with_capacity(e.message.len() + 1);
    m.push_str(&e.message);
    m.push('\n');
    m
}

fn get_log_events(engine: &Engine, input: &Input) -> Result<Answer> {
    let group = input.group()?;
    let Some(stream_name) = input.string("logStreamName")? else {
        return Err(invalid(
            "1 validation error detected: Value null at 'logStreamName' failed to satisfy constraint: Member must not be null",
        ));
    };
    let limit = input.limit(MAX_EVENTS, MAX_EVENTS)?;
    let (start_time, end_time) = time_range(input)?;
    let from_head = input.bool("startFromHead")?.unwrap_or(false);
    let functions = group_functions(engine, &group)?;
    let stream = functions
        .iter()
        .find_map(|f| engine.logs().stream(f, stream_name))
        .ok_or_else(|| not_found(STREAM_NOT_FOUND))?;
    let start = match input.string("nextToken")? {
        Some(t) => event_token(t, &stream)?,
        None if from_head => Start::Head,
        None => Start::Tail,
    };
    let query = EventQuery { start, start_time, end_time, limit, max_bytes: PAGE_BYTES };
    let page = engine.logs().events(&stream, &query).map_err(|e| {
        tracing::warn!(error = %e, "cannot read log stream");
        not_found(STREAM_NOT_FOUND)
    })?;
    // Written by hand: a page holds up to 10,000 events and this is the hot read.
    let mut out = String::with_capacity(page.events.iter().map(|e| e.message.len() + 80).sum::<usize>() + 300);
    out.push_str("{\"events\":[");
    for (i, e) in page.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"timestamp\":{},\"message\":", e.timestamp_ms);
        push_json_string(&mut out, &e.message, true);
        let _ = write!(out, ",\"ingestionTime\":{}}}", e.ingestion_ms);
    }
    out.push_str(&format!(
        "],\"nextForwardToken\":\"f/{:056}/s\",\"nextBackwardToken\":\"b/{:056}/s\"}}",
        page.last, page.first
    ));
    Ok(Answer::Raw(out))
}

/// Appends `s` (and a newline when `newline`) as a JSON string.
fn push_json_string(out: &mut String, s: &str, newline: bool) {
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push_str(esc);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    if newline {
        out.push_str("\\n");
    }
    out.push('"');
}

/// Where FilterLogEvents stopped: the last event it returned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    timestamp_ms: i64,
    stream: String,
    offset: u64,
}

fn filter_token(token: &str) -> Result<Key> {
    let rest = token.strip_prefix("k/").ok_or_else(|| invalid(BAD_TOKEN))?;
    let mut parts = rest.splitn(3, '/');
    let (Some(ts), Some(off), Some(stream)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid(BAD_TOKEN));
    };
    match (ts.parse(), off.parse()) {
        (Ok(timestamp_ms), Ok(offset)) if !stream.is_empty() => Ok(Key { timestamp_ms, stream: stream.into(), offset }),
        _ => Err(invalid(BAD_TOKEN)),
    }
}

/// A stable 56-digit id of an event.
fn event_id(key: &Key) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.stream.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:020}{:016}{:020}", key.timestamp_ms.max(0), h % 10_000_000_000_000_000, key.offset)
}

fn filter_log_events(engine: &Engine, input: &Input) -> Result<Value> {
    let group = input.group()?;
    let names = input.strings("logStreamNames")?;
    let prefix = input.string("logStreamNamePrefix")?;
    if names.is_some() && prefix.is_some() {
        return Err(invalid("logStreamNames and logStreamNamePrefix are mutually exclusive parameters."));
    }
    if names.as_ref().is_some_and(|n| n.is_empty() || n.len() > 100) {
        return Err(invalid(
            "1 validation error detected: Value at 'logStreamNames' failed to satisfy constraint: Member must have length between 1 and 100",
        ));
    }
    let limit = input.limit(MAX_EVENTS, MAX_EVENTS)?;
    let (start_time, end_time) = time_range(input)?;
    let pattern = FilterPattern::parse(input.string("filterPattern")?.unwrap_or("")).map_err(|e| {
        invalid(format!("Invalid filter pattern: {}", e.to_string().trim_start_matches("invalid filter pattern: ")))
    })?;
    let after = input.string("nextToken")?.map(filter_token).transpose()?;
    let streams: Vec<StreamInfo> = group_streams(engine, &group)?
        .into_iter()
        .filter(|s| names.as_ref().is_none_or(|n| n.contains(&s.name)))
        .filter(|s| prefix.is_none_or(|p| s.name.starts_with(p)))
        // A file last written before the start holds no event after it.
        .filter(|s| start_time.is_none_or(|t| s.modified_ms + 1000 >= t))
        .collect();
    // For each stream, its first `limit` matching events after the token; the best `limit` of
    // all of them, in (timestamp, stream, offset) order, make the page.
    let mut found: Vec<(Key, Event)> = Vec::new();
    let mut more = false;
    for s in &streams {
        let from = match &after {
            Some(k) if k.stream == s.name => k.offset,
            _ => 0,
        };
        let mut taken = 0usize;
        let mut bytes = 0usize;
        let worst = if found.len() >= limit { found.last().map(|(k, _)| k.clone()) } else { None };
        let _ = log_store::scan_forward(s, from, |e| {
            if end_time.is_some_and(|end| e.timestamp_ms >= end) {
                return false;
            }
            let key = Key { timestamp_ms: e.timestamp_ms, stream: s.name.clone(), offset: e.offset };
            if after.as_ref().is_some_and(|a| key <= *a) || start_time.is_some_and(|t| e.timestamp_ms < t) {
                return true;
            }
            if worst.as_ref().is_some_and(|w| key > *w) {
                more = true;
                return false;
            }
            if !pattern.matches(&e.message) {
                return true;
            }
            if taken >= limit || bytes > PAGE_BYTES {
                more = true;
                return false;
            }
            taken += 1;
            bytes += e.message.len() + 1 + log_store::EVENT_OVERHEAD;
            found.push((key, e));
            true
        });
        found.sort_by(|a, b| a.0.cmp(&b.0));
        if found.len() > limit {
            found.truncate(limit);
            more = true;
        }
    }
    let mut bytes = 0usize;
    let mut events = Vec::with_capacity(found.len());
    let mut last: Option<&Key> = None;
    for (key, e) in &found {
        bytes += e.message.len() + 1 + log_store::EVENT_OVERHEAD;
        if bytes > PAGE_BYTES && !events.is_empty() {
            more = true;
            break;
        }
        events.push(json!({
            "logStreamName": key.stream,
            "timestamp": e.timestamp_ms,
            "message": wire_message(e),
            "ingestionTime": e.ingestion_ms,
            "eventId": event_id(key),
        }));
        last = Some(key);
    }
    let mut out = json!({ "events": events, "searchedLogStreams": [] });
    if let (true, Some(k)) = (more, last) {
        out["nextToken"] = json!(format!("k/{}/{}/{}", k.timestamp_ms, k.offset, k.stream));
    }
    Ok(out)
}

fn retention_days(input: &Input) -> Result<u32> {
    let Some(days) = input.int("retentionInDays")? else {
        return Err(invalid(
            "1 validation error detected: Value null at 'retentionInDays' failed to satisfy constraint: Member must not be null",
        ));
    };
    match u32::try_from(days) {
        Ok(d) if RETENTION_DAYS.contains(&d) => Ok(d),
        _ => Err(invalid(format!(
            "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            RETENTION_DAYS.map(|d| d.to_string()).join(", ")
        ))),
    }
}

async fn put_retention(engine: &Engine, input: &Input) -> Result<Value> {
    let group = input.group()?;
    let days = retention_days(input)?;
    for f in group_functions(engine, &group)? {
        engine.logs().set_retention_days(&f, Some(days)).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot store retention");
            LogsError { code: "ServiceUnavailableException", message: "cannot store the retention policy".into() }
        })?;
    }
    Ok(json!({}))
}

async fn delete_retention(engine: &Engine, input: &Input) -> Result<Value> {
    let group = input.group()?;
    for f in group_functions(engine, &group)? {
        engine.logs().set_retention_days(&f, None).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot delete retention");
            LogsError { code: "ServiceUnavailableException", message: "cannot delete the retention policy".into() }
        })?;
    }
    Ok(json!({}))
}

async fn delete_log_group(engine: &Engine, input: &Input) -> Result<Value> {
    let group = input.group()?;
    for f in group_functions(engine, &group)? {
        engine.logs().delete_group(&f).await;
    }
    Ok(json!({}))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_arns_name_their_group() {
        assert_eq!(group_of_arn("arn:aws:logs:us-east-1:123:log-group:/aws/lambda/f:*"), "/aws/lambda/f");
        assert_eq!(group_of_arn("arn:aws:logs:us-east-1:123:log-group:/aws/lambda/f"), "/aws/lambda/f");
        assert_eq!(group_of_arn("/aws/lambda/f"), "/aws/lambda/f");
    }

    #[test]
    fn filter_tokens_round_trip_and_bad_ones_fail() {
        let k = filter_token("k/17/42/2026/11/30/[$LATEST]ab").ok().unwrap();
        assert_eq!(k, Key { timestamp_ms: 17, stream: "2026/11/30/[$LATEST]ab".into(), offset: 42 });
        for bad in ["", "k/", "k/x/1/s", "k/1/x/s", "k/1/2/", "f/1", "k/1/2"] {
            assert!(filter_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hand_written_json_strings_parse_back() {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{7} é";
        let mut out = String::new();
        push_json_string(&mut out, text, true);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, format!("{text}\n"));
    }

    #[test]
    fn event_ids_are_56_digits() {
        let id = event_id(&Key { timestamp_ms: 1_700_000_000_000, stream: "s".into(), offset: 12 });
        assert_eq!(id.len(), 56);
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
    }
}
