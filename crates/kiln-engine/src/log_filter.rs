//! CloudWatch Logs filter patterns, for FilterLogEvents.
//!
//! Two forms are understood, as CloudWatch writes them:
//! - **terms**: `ERROR`, `"quoted phrase"`, `?ERROR ?WARN` (any of the `?` terms), `-Exiting`
//!   (none of the `-` terms). An event matches when it contains every plain term, none of the
//!   excluded ones, and (if there are `?` terms) at least one of those; matching is
//!   case-sensitive, on substrings.
//! - **JSON**: `{ $.level = "ERROR" }`, `{ $.latency > 500 }`, `{ ($.a = 1) && ($.b != "x*") }`,
//!   `||`, `IS NULL`, `IS TRUE`, `IS FALSE`, `NOT EXISTS`, selectors with `.field` and `[index]`,
//!   `*` as a wildcard in string values. Only events whose message is a JSON value match.
//!
//! Space-delimited (`[ip, user, …]`) and regular-expression (`%…%`) patterns are refused with an
//! error rather than matched wrongly.

use serde_json::Value;

/// Why a pattern does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid filter pattern: {0}")]
pub struct FilterError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(msg.into()))
}

/// A parsed filter pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterPattern {
    All,
    Terms { all: Vec<String>, any: Vec<String>, none: Vec<String> },
    Json(JsonExpr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum JsonExpr {
    And(Box<JsonExpr>, Box<JsonExpr>),
    Or(Box<JsonExpr>, Box<JsonExpr>),
    Compare { path: Vec<Step>, op: Op, value: Literal },
    IsNull(Vec<Step>),
    IsBool(Vec<Step>, bool),
    NotExists(Vec<Step>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Field(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
}

impl FilterPattern {
    /// Parses a pattern; an empty one matches everything.
    pub fn parse(pattern: &str) -> Result<Self, FilterError> {
        let p = pattern.trim();
        if p.is_empty() {
            return Ok(Self::All);
        }
        if p.starts_with('{') {
            let Some(inner) = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                return err("a JSON pattern must end with '}'");
            };
            let mut parser = Parser { s: inner.as_bytes(), i: 0 };
            let expr = parser.expr()?;
            parser.ws();
            if parser.i != parser.s.len() {
                return err(format!("unexpected '{}'", String::from_utf8_lossy(&parser.s[parser.i..])));
            }
            return Ok(Self::Json(expr));
        }
        if p.starts_with('[') {
            return err("space-delimited patterns ([...]) are not supported by kiln");
        }
        if p.len() > 1 && p.starts_with('%') && p.ends_with('%') {
            return err("regular-expression patterns (%...%) are not supported by kiln");
        }
        parse_terms(p)
    }

    /// Whether an event's message matches.
    pub fn matches(&self, message: &str) -> bool {
        match self {
            Self::All => true,
            Self::Terms { all, any, none } => {
                all.iter().all(|t| message.contains(t.as_str()))
                    && !none.iter().any(|t| message.contains(t.as_str()))
                    && (any.is_empty() || any.iter().any(|t| message.contains(t.as_str())))
            }
            Self::Json(expr) => {
                let m = message.trim();
                if !(m.starts_with('{') || m.starts_with('[')) {
                    return false;
                }
                match serde_json::from_str::<Value>(m) {
                    Ok(v) => expr.eval(&v),
                    Err(_) => false,
                }
            }
        }
    }
}

fn parse_terms(p: &str) -> Result<FilterPattern, FilterError> {
    let (mut all, mut any, mut none) = (Vec::new(), Vec::new(), Vec::new());
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let kind = match b[i] {
            b'?' => {
                i += 1;
                1
            }
            b'-' => {
                i += 1;
                2
            }
            _ => 0,
        };
        let term = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut t = Vec::new();
            loop {
                match b.get(i) {
                    None => return err("unterminated quoted term"),
                    Some(b'\\') if i + 1 < b.len() => {
                        t.push(b[i + 1]);
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        t.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&t).into_owned()
        } else {
            let start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'"' {
                    return err(format!("unexpected '\"' in term '{}'", &p[start..]));
                }
                i += 1;
            }
            p[start..i].to_string()
        };
        if term.is_empty() {
            return err("empty term");
        }
        match kind {
            1 => any.push(term),
            2 => none.push(term),
            _ => all.push(term),
        }
    }
    Ok(FilterPattern::Terms { all, any, none })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(tok.as_bytes()) {
            self.i += tok.len();
            true
        } else {
            false
        }
    }

    /// A keyword, case-insensitive, followed by a non-word character.
    fn keyword(&mut self, word: &str) -> bool {
        self.ws();
        let end = self.i + word.len();
        if end <= self.s.len()
            && self.s[self.i..end].eq_ignore_ascii_case(word.as_bytes())
            && self.s.get(end).is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        {
            self.i = end;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<JsonExpr, FilterError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = JsonExpr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<JsonExpr, FilterError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = JsonExpr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<JsonExpr, FilterError> {
        if self.eat("(") {
            let e = self.expr()?;
            if !self.eat(")") {
                return err("missing ')'");
            }
            return Ok(e);
        }
        let path = self.selector()?;
        if self.keyword("IS") {
            if self.keyword("NULL") {
                return Ok(JsonExpr::IsNull(path));
            }
            if self.keyword("TRUE") {
                return Ok(JsonExpr::IsBool(path, true));
            }
            if self.keyword("FALSE") {
                return Ok(JsonExpr::IsBool(path, false));
            }
            return err("IS must be followed by NULL, TRUE or FALSE");
        }
        if self.keyword("NOT") {
            if self.keyword("EXISTS") {
                return Ok(JsonExpr::NotExists(path));
            }
            return err("NOT must be followed by EXISTS");
        }
        let op = if self.eat("!=") {
            Op::Ne
        } else if self.eat("<=") {
            Op::Le
        } else if self.eat(">=") {
            Op::Ge
        } else if self.eat("=") {
            Op::Eq
        } else if self.eat("<") {
            Op::Lt
        } else if self.eat(">") {
            Op::Gt
        } else {
            return err("expected a comparison (=, !=, <, <=, >, >=, IS, NOT EXISTS) after the selector");
        };
        let value = self.literal()?;
        if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && !matches!(value, Literal::Num(_)) {
            return err("<, <=, > and >= compare numbers only");
        }
        Ok(JsonExpr::Compare { path, op, value })
    }

    fn selector(&mut self) -> Result<Vec<Step>, FilterError> {
        self.ws();
        if self.s.get(self.i) != Some(&b'$') {
            return err("a JSON pattern compares selectors that start with '$.'");
        }
        self.i += 1;
        let mut path = Vec::new();
        loop {
            match self.s.get(self.i) {
                Some(b'.') => {
                    self.i += 1;
                    let start = self.i;
                    while self.i < self.s.len()
                        && (self.s[self.i].is_ascii_alphanumeric()
                            || matches!(self.s[self.i], b'_' | b'-' | b'@' | b':'))
                    {
                        self.i += 1;
                    }
                    if start == self.i {
                        return err("empty field name in selector");
                    }
                    path.push(Step::Field(String::from_utf8_lossy(&self.s[start..self.i]).into_owned()));
                }
                Some(b'[') => {
                    self.i += 1;
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                    let n = std::str::from_utf8(&self.s[start..self.i]).ok().and_then(|n| n.parse().ok());
                    match (n, self.s.get(self.i)) {
                        (Some(n), Some(b']')) => {
                            self.i += 1;
                            path.push(Step::Index(n));
                        }
                        _ => return err("an array index is a number in [ ]"),
                    }
                }
                _ => break,
            }
        }
        if path.is_empty() {
            return err("a selector names a field, as in $.level");
        }
        Ok(path)
    }

    fn literal(&mut self) -> Result<Literal, FilterError> {
        self.ws();
        match self.s.get(self.i) {
            None => err("missing value after the comparison"),
            Some(b'"') => {
                self.i += 1;
                let mut t = Vec::new();
                loop {
                    match self.s.get(self.i) {
                        None => return err("unterminated string"),
                        Some(b'\\') if self.i + 1 < self.s.len() => {
                            t.push(self.s[self.i + 1]);
                            self.i += 2;
                        }
                        Some(b'"') => {
                            self.i += 1;
                            return Ok(Literal::Str(String::from_utf8_lossy(&t).into_owned()));
                        }
                        Some(&c) => {
                            t.push(c);
                            self.i += 1;
                        }
                    }
                }
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric()
                        || matches!(self.s[self.i], b'_' | b'-' | b'.' | b'*' | b'+' | b':'))
                {
                    self.i += 1;
                }
                if start == self.i {
                    return err(format!("unexpected '{}'", self.s[self.i] as char));
                }
                let word = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                Ok(match word.parse::<f64>() {
                    Ok(n) if n.is_finite() => Literal::Num(n),
                    _ => Literal::Str(word),
                })
            }
        }
    }
}

fn select<'v>(v: &'v Value, path: &[Step]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Field(f) => v.get(f.as_str()),
        Step::Index(i) => v.get(*i),
    })
}

/// `*` matches any run of characters.
fn wildcard(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

impl JsonExpr {
    pub fn eval(&self, v: &Value) -> bool {
        match self {
            Self::And(a, b) => a.eval(v) && b.eval(v),
            Self::Or(a, b) => a.eval(v) || b.eval(v),
            Self::IsNull(p) => select(v, p).is_some_and(Value::is_null),
            Self::IsBool(p, want) => select(v, p).and_then(Value::as_bool) == Some(*want),
            Self::NotExists(p) => select(v, p).is_none(),
            Self::Compare { path, op, value } => {
                let Some(field) = select(v, path) else { return false };
                match value {
                    Literal::Num(n) => {
                        let Some(x) = field.as_f64() else {
                            // A string field compared with `=` to a bare word that looks like a
                            // number compares as text.
                            return match (op, field.as_str()) {
                                (Op::Eq, Some(s)) => s.parse::<f64>().ok() == Some(*n),
                                (Op::Ne, Some(s)) => s.parse::<f64>().ok() != Some(*n),
                                _ => false,
                            };
                        };
                        match op {
                            Op::Eq => x == *n,
                            Op::Ne => x != *n,
                            Op::Lt => x < *n,
                            Op::Le => x <= *n,
                            Op::Gt => x > *n,
                            Op::Ge => x >= *n,
                        }
                    }
                    Literal::Str(s) => {
                        let text = match field {
                            Value::String(t) => t.clone(),
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            Value::Null => "null".into(),
                            _ => return false,
                        };
                        let eq = wildcard(s, &text);
                        match op {
                            Op::Eq => eq,
                            Op::Ne => !eq,
                            _ => false,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, msg: &str) -> bool {
        FilterPattern::parse(p).unwrap().matches(msg)
    }

    #[test]
    fn terms_must_all_be_present() {
        assert!(m("ERROR", "an ERROR here"));
        assert!(!m("ERROR", "an error here"));
        assert!(m("ERROR disk", "ERROR: disk full"));
        assert!(!m("ERROR disk", "ERROR: memory"));
        assert!(m("", "anything"));
    }

    #[test]
    fn quoted_phrases_keep_their_spaces() {
        assert!(m("\"disk full\"", "ERROR: disk full"));
        assert!(!m("\"disk full\"", "disk is full"));
        assert!(m("\"say \\\"hi\\\"\"", "they say \"hi\""));
    }

    #[test]
    fn question_marks_are_alternatives_and_minus_excludes() {
        assert!(m("?ERROR ?WARN", "WARN low"));
        assert!(m("?ERROR ?WARN", "ERROR x"));
        assert!(!m("?ERROR ?WARN", "INFO x"));
        assert!(m("ERROR -Exiting", "ERROR: retry"));
        assert!(!m("ERROR -Exiting", "ERROR: Exiting"));
        assert!(m("-\"health check\"", "GET /"));
        assert!(!m("-\"health check\"", "GET / health check"));
    }

    #[test]
    fn json_patterns_compare_fields() {
        let log = r#"{"level":"ERROR","latency":750,"user":{"id":"u-17","admin":true},"tags":["a","b"],"gone":null}"#;
        assert!(m(r#"{ $.level = "ERROR" }"#, log));
        assert!(m("{ $.level = ERROR }", log));
        assert!(!m(r#"{ $.level = "INFO" }"#, log));
        assert!(m(r#"{ $.level != "INFO" }"#, log));
        assert!(m("{ $.latency > 500 }", log));
        assert!(!m("{ $.latency < 500 }", log));
        assert!(m("{ $.latency >= 750 && $.latency <= 750 }", log));
        assert!(m(r#"{ $.user.id = "u-*" }"#, log));
        assert!(m(r#"{ $.tags[1] = "b" }"#, log));
        assert!(m("{ $.user.admin IS TRUE }", log));
        assert!(m("{ $.gone IS NULL }", log));
        assert!(m("{ $.missing NOT EXISTS }", log));
        assert!(!m("{ $.level NOT EXISTS }", log));
        assert!(m(r#"{ ($.level = "INFO") || ($.latency = 750) }"#, log));
        assert!(!m(r#"{ ($.level = "INFO") && ($.latency = 750) }"#, log));
        assert!(!m(r#"{ $.level = "ERROR" }"#, "level ERROR, not json"));
        assert!(m(r#"{ $.level = "ERROR" }"#, &format!("{log}\n")));
    }

    #[test]
    fn broken_patterns_are_errors() {
        for bad in [
            "\"unterminated",
            "{ $.level = \"ERROR\" ",
            "{ level = 1 }",
            "{ $.level }",
            "{ $.a > \"x\" }",
            "{ ($.a = 1 }",
            "{ $.a = 1 } extra",
            "{ $.a = 1 &&  }",
            "{ $. = 1 }",
            "{ $.a[x] = 1 }",
            "[ip, user]",
            "%regex%",
            "?",
            "-",
            "ab\"c",
        ] {
            assert!(FilterPattern::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn wildcards_match_runs() {
        assert!(wildcard("a*c", "abbbc"));
        assert!(wildcard("*", ""));
        assert!(wildcard("a*b*c", "a-b-c"));
        assert!(!wildcard("a*b*c", "acb"));
        assert!(!wildcard("ab*ba", "aba"));
    }
}
