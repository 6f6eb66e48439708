//! `GET /kiln/v1/runtimes`: the interpreters this server found and what every Lambda runtime
//! value runs on (kiln's own extra; Lambda has no such operation).

use kiln_engine::runtimes::{Interpreter, Kind};
use kiln_engine::Engine;
use serde_json::{json, Value};

fn interpreter(i: &Interpreter) -> Value {
    json!({
        "Language": match i.kind { Kind::Python => "python", Kind::Node => "nodejs" },
        "Version": format!("{}.{}.{}", i.version.0, i.version.1, i.version.2),
        "Path": i.path.display().to_string(),
        "For": i.pinned_for,
    })
}

/// `{"Interpreters": [...], "Runtimes": [{"Runtime", "Status", "Interpreter"?}]}`.
pub fn listing(engine: &Engine) -> Value {
    let r = engine.runtimes();
    let rows: Vec<Value> = r
        .table()
        .iter()
        .map(|row| {
            let mut v = json!({ "Runtime": row.runtime, "Status": row.status });
            if let Some(i) = &row.interpreter {
                v["Interpreter"] = interpreter(i);
            }
            v
        })
        .collect();
    json!({
        "Interpreters": r.interpreters().iter().map(interpreter).collect::<Vec<_>>(),
        "Runtimes": rows,
    })
}
