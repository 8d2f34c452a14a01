//! `feegate policy test COMPONENT --fixtures FILE`: run a component on example inputs
//! and check its outputs, before publishing it.
//!
//! A fixture file is JSON:
//!
//! ```json
//! {
//!   "kind": "tariff",
//!   "parameters": { "charge_rounding": "half-up", "steps": [ ... ] },
//!   "cases": [
//!     { "name": "all in step 1",
//!       "input": { ...a tariff-input, as the decision log records one... },
//!       "expect": { "charge_fen": 498 } }
//!   ]
//! }
//! ```
//!
//! `kind` is a decision kind (`tariff`, `warning`, `notice`, `cutoff`, `reconnection`).
//! `parameters` (optional) goes into every input that has no `parameters` of its own,
//! or an empty one — the form the `decisions` table stores an input in since migration
//! 0017 (each parameters text kept apart), so an input copied from the table works too.
//! `expect` is matched as a subset: every key given must be equal in the output (objects
//! recursively, arrays and scalars exactly); keys not given are not checked.
//! `"expect": {"failure": "refused"}` expects the component to fail with that code.

use crate::audit::{self, Run};
use crate::policy::{LoadedComponent, PolicyEngine};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Deserialize)]
struct FixtureFile {
    kind: String,
    #[serde(default)]
    parameters: Option<Value>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    input: Value,
    expect: Value,
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    pub fuel_used: u64,
    /// What did not match (empty when passed).
    pub mismatch: String,
    /// The whole output (or failure) as JSON.
    pub output: String,
}

/// The decision kind a fixture file is for (to check it against the component).
pub fn kind_of(text: &str) -> Result<String, String> {
    Ok(parse(text)?.kind)
}

/// Reads a fixture file; one without cases is refused (a file that tests nothing must
/// not pass).
fn parse(text: &str) -> Result<FixtureFile, String> {
    let f: FixtureFile = serde_json::from_str(text).map_err(|e| format!("fixture file: {e}"))?;
    if f.cases.is_empty() {
        return Err(
            "fixture file: \"cases\" is empty; a fixture file needs at least one case (input and expect)"
                .into(),
        );
    }
    Ok(f)
}

/// Where `actual` differs from the subset `expected` (`None`: it matches).
pub fn subset_mismatch(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().find_map(|(k, ev)| match a.get(k) {
            Some(av) => subset_mismatch(ev, av, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k}: missing in the output")),
        }),
        _ if expected == actual => None,
        _ => Some(format!("{path}: expected {expected}, got {actual}")),
    }
}

/// Runs every case of the fixture file `text` through `c`.
pub fn run(
    engine: &PolicyEngine,
    c: &LoadedComponent,
    text: &str,
) -> Result<Vec<CaseResult>, String> {
    let f = parse(text)?;
    let mut results = Vec::with_capacity(f.cases.len());
    for case in f.cases {
        let mut input = case.input;
        // An empty `parameters` is the decision log's stored form (migration 0017): an
        // input copied from the table gets the file's parameters too.
        if let (Some(p), Some(obj)) = (&f.parameters, input.as_object_mut())
            && obj.get("parameters").is_none_or(|v| v == "")
        {
            obj.insert("parameters".into(), Value::String(p.to_string()));
        }
        let run: Run = audit::run_recorded(engine, c, &f.kind, &input.to_string(), None)
            .map_err(|e| format!("case {:?}: input is not a {} input: {e}", case.name, f.kind))?;
        let (outcome, body) = run.recorded_form();
        let actual: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let mismatch = if outcome == "failed" && case.expect.get("failure").is_none() {
            Some(format!("the component failed: {body}"))
        } else {
            subset_mismatch(&case.expect, &actual, "output")
        };
        results.push(CaseResult {
            name: case.name,
            passed: mismatch.is_none(),
            fuel_used: run.fuel_used(),
            mismatch: mismatch.unwrap_or_default(),
            output: body,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fixture_file_without_cases_is_refused() {
        let e = kind_of(r#"{"kind": "tariff", "cases": []}"#).unwrap_err();
        assert!(e.contains("\"cases\" is empty"), "{e}");
        assert_eq!(
            kind_of(r#"{"kind": "tariff", "cases": [{"name": "a", "input": {}, "expect": {}}]}"#)
                .as_deref(),
            Ok("tariff")
        );
    }

    #[test]
    fn expected_keys_must_match_and_others_are_ignored() {
        let out = json!({"charge_fen": 498, "lines": [1, 2], "reason_code": "step-tariff"});
        assert_eq!(
            subset_mismatch(&json!({"charge_fen": 498}), &out, "output"),
            None
        );
        assert_eq!(
            subset_mismatch(&json!({"charge_fen": 499}), &out, "output").unwrap(),
            "output.charge_fen: expected 499, got 498"
        );
        assert!(
            subset_mismatch(&json!({"lines": [1]}), &out, "output").is_some(),
            "arrays are exact"
        );
        assert!(
            subset_mismatch(&json!({"level": 1}), &out, "output")
                .unwrap()
                .contains("missing")
        );
    }
}
