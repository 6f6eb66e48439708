//! Resource-based policies of functions: the statements AddPermission builds, the checks on a
//! policy given whole (PutResourcePolicy), and [`allows`], which decides whether a policy lets
//! another account do something to a function.
//!
//! A function's policy is kept as the JSON document GetPolicy returns (`Version` 2012-10-17,
//! `Id` "default", `Statement` in the order they were added), so what comes back is byte for
//! byte what was stored. AddPermission's members become a statement the way Lambda builds it:
//! a service principal (`s3.amazonaws.com`) as `{"Service": …}`, an account id as
//! `{"AWS": "arn:aws:iam::<id>:root"}`, an IAM ARN as `{"AWS": …}`, `*` as is; conditions as
//! `StringEquals` (`AWS:SourceAccount`, `aws:PrincipalOrgID`, `lambda:EventSourceToken`,
//! `lambda:FunctionUrlAuthType`) and `ArnLike` (`AWS:SourceArn`).

use crate::error::ModelError;
use serde_json::{json, Map, Value};

/// The longest policy document Lambda keeps, in bytes.
pub const POLICY_MAX_BYTES: usize = 20_480;

/// What AddPermission asks for.
#[derive(Debug, Clone, Default)]
pub struct PermissionInput {
    pub statement_id: String,
    pub action: String,
    pub principal: String,
    pub source_arn: Option<String>,
    pub source_account: Option<String>,
    pub event_source_token: Option<String>,
    pub principal_org_id: Option<String>,
    pub function_url_auth_type: Option<String>,
}

const INVALID_PRINCIPAL: &str = "The provided principal was invalid. Please check the principal and try again.";

fn all(s: &str, ok: impl Fn(u8) -> bool) -> bool {
    s.bytes().all(ok)
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && all(s, |b| b.is_ascii_digit())
}

/// Checks a statement id (AddPermission's `StatementId`).
pub fn validate_statement_id(sid: &str) -> Result<(), ModelError> {
    if sid.is_empty() || sid.len() > 100 {
        return Err(ModelError::constraint(
            sid,
            "statementId",
            "Member must have length less than or equal to 100, Member must have length greater than or equal to 1",
        ));
    }
    if !all(sid, |b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ModelError::constraint(
            sid,
            "statementId",
            "Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)",
        ));
    }
    Ok(())
}

fn validate_input(p: &PermissionInput) -> Result<(), ModelError> {
    validate_statement_id(&p.statement_id)?;
    let action_ok = p.action == "*"
        || p.action
            .strip_prefix("lambda:")
            .is_some_and(|a| a == "*" || (!a.is_empty() && all(a, |b| b.is_ascii_alphabetic())));
    if !action_ok {
        return Err(ModelError::constraint(
            &p.action,
            "action",
            "Member must satisfy regular expression pattern: (lambda:[*]|lambda:[a-zA-Z]+|[*])",
        ));
    }
    if p.principal.is_empty() || p.principal.len() > 2048 || p.principal.chars().any(char::is_whitespace) {
        return Err(ModelError::constraint(
            &p.principal,
            "principal",
            "Member must satisfy regular expression pattern: [^\\s]+",
        ));
    }
    if let Some(a) = &p.source_account {
        if !is_account(a) {
            return Err(ModelError::constraint(
                a,
                "sourceAccount",
                "Member must satisfy regular expression pattern: \\d{12}",
            ));
        }
    }
    if let Some(o) = &p.principal_org_id {
        let ok = o.len() >= 12
            && o.len() <= 34
            && o.strip_prefix("o-").is_some_and(|r| all(r, |b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        if !ok {
            return Err(ModelError::constraint(
                o,
                "principalOrgID",
                "Member must satisfy regular expression pattern: o-[a-z0-9]{10,32}",
            ));
        }
    }
    if let Some(t) = &p.event_source_token {
        if t.len() > 256 || t.is_empty() || !all(t, |b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(ModelError::constraint(
                t,
                "eventSourceToken",
                "Member must satisfy regular expression pattern: [a-zA-Z0-9._\\-]+",
            ));
        }
    }
    if let Some(t) = &p.function_url_auth_type {
        if t != "NONE" && t != "AWS_IAM" {
            return Err(ModelError::constraint(
                t,
                "functionUrlAuthType",
                "Member must satisfy enum value set: [NONE, AWS_IAM]",
            ));
        }
    }
    if let Some(a) = &p.source_arn {
        let parts: Vec<&str> = a.splitn(6, ':').collect();
        let ok = parts.len() == 6 && parts[0] == "arn" && parts[1].starts_with("aws") && !parts[2].is_empty();
        if !ok || a.len() > 10_000 {
            return Err(ModelError::constraint(
                a,
                "sourceArn",
                "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1})?:(\\d{12})?:(.*)",
            ));
        }
    }
    Ok(())
}

/// The `Principal` member of a statement for AddPermission's `Principal`.
fn principal_json(principal: &str) -> Result<Value, ModelError> {
    if principal == "*" {
        Ok(json!("*"))
    } else if is_account(principal) {
        Ok(json!({ "AWS": format!("arn:aws:iam::{principal}:root") }))
    } else if principal.starts_with("arn:aws") && principal.contains(":iam::") {
        Ok(json!({ "AWS": principal }))
    } else if principal.contains('.') {
        Ok(json!({ "Service": principal }))
    } else {
        Err(ModelError::InvalidParameterValue(INVALID_PRINCIPAL.into()))
    }
}

/// The statement AddPermission adds for `p` to the policy of `resource_arn`.
pub fn statement(resource_arn: &str, p: &PermissionInput) -> Result<Value, ModelError> {
    validate_input(p)?;
    let mut s = Map::new();
    s.insert("Sid".into(), json!(p.statement_id));
    s.insert("Effect".into(), json!("Allow"));
    s.insert("Principal".into(), principal_json(&p.principal)?);
    s.insert("Action".into(), json!(p.action));
    s.insert("Resource".into(), json!(resource_arn));
    let mut equals = Map::new();
    if let Some(v) = &p.function_url_auth_type {
        equals.insert("lambda:FunctionUrlAuthType".into(), json!(v));
    }
    if let Some(v) = &p.principal_org_id {
        equals.insert("aws:PrincipalOrgID".into(), json!(v));
    }
    if let Some(v) = &p.source_account {
        equals.insert("AWS:SourceAccount".into(), json!(v));
    }
    if let Some(v) = &p.event_source_token {
        equals.insert("lambda:EventSourceToken".into(), json!(v));
    }
    let mut condition = Map::new();
    if !equals.is_empty() {
        condition.insert("StringEquals".into(), Value::Object(equals));
    }
    if let Some(v) = &p.source_arn {
        condition.insert("ArnLike".into(), json!({ "AWS:SourceArn": v }));
    }
    if !condition.is_empty() {
        s.insert("Condition".into(), Value::Object(condition));
    }
    Ok(Value::Object(s))
}

/// Writes `v` as JSON with the members of `order` first, in that order, then the rest.
fn ordered(v: &Value, order: &[&str], inner: impl Fn(&str, &Value) -> String) -> String {
    let Some(m) = v.as_object() else { return v.to_string() };
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_by_key(|k| (order.iter().position(|o| o == k).unwrap_or(order.len()), k.as_str()));
    let members: Vec<String> =
        keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), inner(k, &m[k.as_str()]))).collect();
    format!("{{{}}}", members.join(","))
}

/// A statement as Lambda writes it: `Sid`, `Effect`, `Principal`, `Action`, `Resource`,
/// `Condition`.
pub fn render_statement(s: &Value) -> String {
    ordered(s, &["Sid", "Effect", "Principal", "Action", "Resource", "Condition"], |k, v| {
        if k == "Condition" {
            ordered(v, &["StringEquals", "ArnLike"], |_, v| v.to_string())
        } else {
            v.to_string()
        }
    })
}

/// A policy document as GetPolicy returns it: `Version`, `Id`, then `Statement`.
pub fn render_document(doc: &Value) -> String {
    ordered(doc, &["Version", "Id", "Statement"], |k, v| match (k, v) {
        ("Statement", Value::Array(a)) => format!("[{}]", a.iter().map(render_statement).collect::<Vec<_>>().join(",")),
        _ => v.to_string(),
    })
}

/// An empty policy document, before its first statement.
pub fn empty_document() -> Value {
    json!({ "Version": "2012-10-17", "Id": "default", "Statement": [] })
}

/// The `Sid`s of a stored document's statements.
pub fn statement_ids(doc: &Value) -> Vec<String> {
    statements(doc).iter().filter_map(|s| s.get("Sid").and_then(Value::as_str)).map(str::to_owned).collect()
}

fn statements(doc: &Value) -> Vec<&Value> {
    match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => Vec::new(),
    }
}

/// Checks a policy given whole (PutResourcePolicy): JSON, an object with statements, each
/// with an `Effect` and a principal kiln can read.
pub fn validate_document(policy: &str) -> Result<Value, ModelError> {
    if policy.is_empty() || policy.len() > POLICY_MAX_BYTES {
        return Err(ModelError::constraint(
            "<policy>",
            "policy",
            "Member must have length less than or equal to 20480, Member must have length greater than or equal to 1",
        ));
    }
    let doc: Value = serde_json::from_str(policy)
        .map_err(|_| ModelError::InvalidParameterValue("The policy document is not valid JSON.".into()))?;
    let ok_shape = doc.is_object() && matches!(doc.get("Statement"), Some(Value::Array(_) | Value::Object(_)));
    if !ok_shape {
        return Err(ModelError::InvalidParameterValue("The policy document must contain a Statement.".into()));
    }
    for s in statements(&doc) {
        let effect_ok = matches!(s.get("Effect").and_then(Value::as_str), Some("Allow" | "Deny"));
        if !effect_ok {
            return Err(ModelError::InvalidParameterValue(
                "Each policy statement needs an Effect of Allow or Deny.".into(),
            ));
        }
        let principal_ok = match s.get("Principal") {
            Some(Value::String(p)) => p == "*",
            Some(Value::Object(m)) => {
                !m.is_empty()
                    && m.iter().all(|(k, v)| {
                        matches!(k.as_str(), "AWS" | "Service")
                            && match v {
                                Value::String(_) => true,
                                Value::Array(a) => !a.is_empty() && a.iter().all(Value::is_string),
                                _ => false,
                            }
                    })
            }
            _ => false,
        };
        if !principal_ok {
            return Err(ModelError::InvalidParameterValue(INVALID_PRINCIPAL.into()));
        }
    }
    Ok(doc)
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// `*` and `?` wildcards, as `ArnLike` and `StringLike` match.
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn action_matches(statement: &Value, action: &str) -> bool {
    strings(statement.get("Action")).iter().any(|a| glob(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
}

fn principal_matches(statement: &Value, account: &str) -> bool {
    match statement.get("Principal") {
        Some(Value::String(p)) => p == "*",
        Some(Value::Object(m)) => strings(m.get("AWS"))
            .iter()
            .any(|p| *p == "*" || *p == account || *p == format!("arn:aws:iam::{account}:root")),
        _ => false,
    }
}

/// Whether every condition of a statement holds for a call with these facts. Keys kiln cannot
/// know for a direct call (organisations, event-source tokens, function URL auth) never hold,
/// so a statement that needs them grants nothing here.
fn conditions_hold(statement: &Value, account: &str, source_arn: Option<&str>, url_auth_type: Option<&str>) -> bool {
    let Some(cond) = statement.get("Condition") else { return true };
    let Some(cond) = cond.as_object() else { return false };
    cond.iter().all(|(op, keys)| {
        let Some(keys) = keys.as_object() else { return false };
        keys.iter().all(|(key, wanted)| {
            let actual = match key.to_ascii_lowercase().as_str() {
                "aws:sourcearn" => source_arn,
                "aws:sourceaccount" | "aws:sourceowner" => source_arn.and(Some(account)),
                "aws:principalaccount" => Some(account),
                "lambda:functionurlauthtype" => url_auth_type,
                _ => None,
            };
            let Some(actual) = actual else { return false };
            let wanted = strings(Some(wanted));
            match op.as_str() {
                "StringEquals" | "ArnEquals" => wanted.contains(&actual),
                "StringLike" | "ArnLike" => wanted.iter().any(|w| glob(w, actual)),
                _ => false,
            }
        })
    })
}

/// Whether `policy_json` (a function's resource policy) lets `principal_account` perform
/// `action` (`lambda:InvokeFunction`), coming from `source_arn` if the call has a source.
/// A matching `Deny` wins over any `Allow`; no policy, or a policy kiln cannot read, allows
/// nothing.
pub fn allows(policy_json: &str, principal_account: &str, action: &str, source_arn: Option<&str>) -> bool {
    allows_with(policy_json, principal_account, action, source_arn, None)
}

/// Whether `policy_json` lets `principal_account` call the function's URL whose auth type is
/// `auth_type` (`AWS_IAM`): `lambda:InvokeFunctionUrl`, with the `lambda:FunctionUrlAuthType`
/// condition AddPermission's `FunctionUrlAuthType` writes.
pub fn allows_url(policy_json: &str, principal_account: &str, auth_type: &str) -> bool {
    allows_with(policy_json, principal_account, "lambda:InvokeFunctionUrl", None, Some(auth_type))
}

fn allows_with(
    policy_json: &str,
    principal_account: &str,
    action: &str,
    source_arn: Option<&str>,
    url_auth_type: Option<&str>,
) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(policy_json) else { return false };
    let mut allowed = false;
    for s in statements(&doc) {
        if !(action_matches(s, action)
            && principal_matches(s, principal_account)
            && conditions_hold(s, principal_account, source_arn, url_auth_type))
        {
            continue;
        }
        match s.get("Effect").and_then(Value::as_str) {
            Some("Deny") => return false,
            Some("Allow") => allowed = true,
            _ => {}
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:f";

    #[test]
    fn a_url_permission_needs_the_url_action_and_its_auth_type() {
        let doc = json!({"Version": "2012-10-17", "Statement": [{
            "Sid": "url", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
            "Action": "lambda:InvokeFunctionUrl", "Resource": ARN,
            "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}}}]})
        .to_string();
        assert!(allows_url(&doc, "222222222222", "AWS_IAM"));
        assert!(!allows_url(&doc, "333333333333", "AWS_IAM"));
        assert!(!allows_url(&doc, "222222222222", "NONE"));
        // The URL permission is not an Invoke permission.
        assert!(!allows(&doc, "222222222222", "lambda:InvokeFunction", None));
    }

    fn input(sid: &str, principal: &str) -> PermissionInput {
        PermissionInput {
            statement_id: sid.into(),
            action: "lambda:InvokeFunction".into(),
            principal: principal.into(),
            ..Default::default()
        }
    }

    #[test]
    fn statements_are_built_as_lambda_builds_them() {
        let s = statement(ARN, &input("s1", "s3.amazonaws.com")).unwrap();
        assert_eq!(
            render_statement(&s),
            r#"{"Sid":"s1","Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":"lambda:InvokeFunction","Resource":"arn:aws:lambda:us-east-1:000000000000:function:f"}"#
        );
        let mut p = input("s2", "123456789012");
        p.source_arn = Some("arn:aws:s3:::bucket".into());
        p.source_account = Some("123456789012".into());
        p.principal_org_id = Some("o-abcdefghij".into());
        let s = statement(ARN, &p).unwrap();
        assert_eq!(s["Principal"], json!({"AWS": "arn:aws:iam::123456789012:root"}));
        assert_eq!(
            s["Condition"],
            json!({
                "StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij", "AWS:SourceAccount": "123456789012"},
                "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::bucket"}
            })
        );
        assert_eq!(statement(ARN, &input("s3", "*")).unwrap()["Principal"], json!("*"));
        let mut doc = empty_document();
        doc["Statement"] = json!([s]);
        assert!(render_document(&doc).starts_with(
            r#"{"Version":"2012-10-17","Id":"default","Statement":[{"Sid":"s2","Effect":"Allow","Principal":{"AWS":"#
        ));
        assert!(render_document(&doc).contains(r#""Condition":{"StringEquals":"#));
    }

    #[test]
    fn bad_members_are_refused() {
        assert!(matches!(statement(ARN, &input("bad sid", "*")), Err(ModelError::Validation(_))));
        assert!(matches!(statement(ARN, &input("s", "nobody")), Err(ModelError::InvalidParameterValue(_))));
        let mut p = input("s", "*");
        p.action = "s3:GetObject".into();
        assert!(matches!(statement(ARN, &p), Err(ModelError::Validation(_))));
        let mut p = input("s", "*");
        p.source_account = Some("12".into());
        assert!(matches!(statement(ARN, &p), Err(ModelError::Validation(_))));
        let mut p = input("s", "*");
        p.function_url_auth_type = Some("BASIC".into());
        assert!(matches!(statement(ARN, &p), Err(ModelError::Validation(_))));
    }

    fn policy(statements: Vec<Value>) -> String {
        json!({ "Version": "2012-10-17", "Id": "default", "Statement": statements }).to_string()
    }

    #[test]
    fn allows_the_account_a_statement_names() {
        let p = policy(vec![statement(ARN, &input("s", "111111111111")).unwrap()]);
        assert!(allows(&p, "111111111111", "lambda:InvokeFunction", None));
        assert!(!allows(&p, "222222222222", "lambda:InvokeFunction", None));
        assert!(!allows(&p, "111111111111", "lambda:GetFunction", None));
    }

    #[test]
    fn wildcards_in_principal_and_action() {
        let mut p = input("s", "*");
        p.action = "lambda:*".into();
        let doc = policy(vec![statement(ARN, &p).unwrap()]);
        assert!(allows(&doc, "333333333333", "lambda:InvokeFunction", None));
        assert!(allows(&doc, "333333333333", "lambda:invokefunction", None));
    }

    #[test]
    fn service_principals_grant_no_account() {
        let doc = policy(vec![statement(ARN, &input("s", "events.amazonaws.com")).unwrap()]);
        assert!(!allows(&doc, "111111111111", "lambda:InvokeFunction", None));
    }

    #[test]
    fn source_arn_conditions_need_a_matching_source() {
        let mut p = input("s", "111111111111");
        p.source_arn = Some("arn:aws:events:us-east-1:111111111111:rule/*".into());
        let doc = policy(vec![statement(ARN, &p).unwrap()]);
        assert!(!allows(&doc, "111111111111", "lambda:InvokeFunction", None));
        assert!(allows(
            &doc,
            "111111111111",
            "lambda:InvokeFunction",
            Some("arn:aws:events:us-east-1:111111111111:rule/daily")
        ));
        assert!(!allows(&doc, "111111111111", "lambda:InvokeFunction", Some("arn:aws:sqs:us-east-1:111111111111:q")));
    }

    #[test]
    fn anyone_with_a_principal_account_condition() {
        let s = json!({"Sid": "a", "Effect": "Allow", "Principal": "*", "Action": "lambda:InvokeFunction", "Resource": ARN,
            "Condition": {"StringEquals": {"aws:PrincipalAccount": ["111111111111", "333333333333"]}}});
        let doc = policy(vec![s]);
        assert!(allows(&doc, "111111111111", "lambda:InvokeFunction", None));
        assert!(allows(&doc, "333333333333", "lambda:InvokeFunction", None));
        assert!(!allows(&doc, "222222222222", "lambda:InvokeFunction", None));
        let s = json!({"Sid": "b", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::222222222222:root"]}, "Action": ["lambda:Get*", "lambda:Invoke*"], "Resource": ARN});
        assert!(allows(&policy(vec![s]), "222222222222", "lambda:InvokeFunction", None));
    }

    #[test]
    fn conditions_kiln_cannot_know_grant_nothing() {
        let mut p = input("s", "*");
        p.principal_org_id = Some("o-abcdefghij".into());
        let doc = policy(vec![statement(ARN, &p).unwrap()]);
        assert!(!allows(&doc, "111111111111", "lambda:InvokeFunction", None));
    }

    #[test]
    fn deny_wins_and_garbage_allows_nothing() {
        let allow = statement(ARN, &input("a", "*")).unwrap();
        let deny = json!({"Sid": "d", "Effect": "Deny", "Principal": {"AWS": "111111111111"}, "Action": "lambda:InvokeFunction", "Resource": ARN});
        let doc = policy(vec![allow, deny]);
        assert!(!allows(&doc, "111111111111", "lambda:InvokeFunction", None));
        assert!(allows(&doc, "222222222222", "lambda:InvokeFunction", None));
        assert!(!allows("not json", "111111111111", "lambda:InvokeFunction", None));
        assert!(!allows("{}", "111111111111", "lambda:InvokeFunction", None));
    }

    #[test]
    fn documents_given_whole_are_checked() {
        assert!(validate_document(&policy(vec![statement(ARN, &input("a", "*")).unwrap()])).is_ok());
        assert!(matches!(validate_document("{"), Err(ModelError::InvalidParameterValue(_))));
        assert!(matches!(validate_document("[]"), Err(ModelError::InvalidParameterValue(_))));
        let bad_principal = policy(vec![json!({"Effect": "Allow", "Principal": {"Nobody": "x"}, "Action": "*"})]);
        assert!(matches!(validate_document(&bad_principal), Err(ModelError::InvalidParameterValue(_))));
        assert!(matches!(validate_document(&"x".repeat(20_481)), Err(ModelError::Validation(_))));
    }

    #[test]
    fn glob_matches_like_arnlike() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*", ""));
        assert!(!glob("abc", "abcd"));
    }
}
