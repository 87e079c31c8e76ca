//! Pipelines: an ordered list of steps, each parsed from JSON into a value that is valid by
//! construction. A `Pipeline` that exists can be run: the API parses a request's list with
//! [`Pipeline::parse`], and deserializing one (the worker reading a queued job back) runs the
//! same parse, so both see the same checks.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::steps::evaluate::EvaluateStep;
use crate::steps::{Step, SUPPORTED_OPS};
use crate::ParseError;

pub const MAX_STEPS: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Pipeline(Vec<Step>);

impl<'de> Deserialize<'de> for Pipeline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let steps = Vec::<Value>::deserialize(d)?;
        Pipeline::parse(&steps).map_err(serde::de::Error::custom)
    }
}

fn supported() -> String {
    SUPPORTED_OPS.join(", ")
}

impl Pipeline {
    /// Parses a request's `pipeline` array, naming the step and field at fault.
    pub fn parse(steps: &[Value]) -> Result<Self, ParseError> {
        if steps.is_empty() {
            return Err(ParseError(format!(
                "pipeline is empty; give at least one step, e.g. {{\"op\":\"prune\",\"method\":\"magnitude\",\"sparsity\":0.5}} (supported ops: {})",
                supported()
            )));
        }
        if steps.len() > MAX_STEPS {
            return Err(ParseError(format!(
                "pipeline has {} steps; at most {MAX_STEPS} are allowed",
                steps.len()
            )));
        }
        let parsed = steps
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Self::parse_step(v).map_err(|e| ParseError(format!("pipeline[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_order(&parsed)?;
        Ok(Pipeline(parsed))
    }

    fn parse_step(value: &Value) -> Result<Step, ParseError> {
        let Value::Object(map) = value else {
            return Err(ParseError(
                "each step must be a JSON object with an \"op\" field".into(),
            ));
        };
        let op = match map.get("op") {
            Some(Value::String(op)) => op.as_str(),
            Some(_) => return Err(ParseError("\"op\" must be a string".into())),
            None => {
                return Err(ParseError(format!(
                    "missing \"op\"; supported ops: {}",
                    supported()
                )))
            }
        };
        let mut fields = map.clone();
        fields.remove("op");
        match Step::parse_op(op, Value::Object(fields)) {
            Some(step) => step.map_err(|e| ParseError(format!("{op}: {e}"))),
            None => Err(ParseError(format!(
                "unknown op '{op}'; supported ops: {}",
                supported()
            ))),
        }
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    pub fn needs_architecture(&self) -> bool {
        self.0.iter().any(Step::needs_architecture)
    }

    pub fn needs_dataset(&self) -> bool {
        self.0.iter().any(Step::needs_dataset)
    }

    /// Whether some step computes gradients.
    pub fn trains(&self) -> bool {
        self.0.iter().any(|s| s.needs().trains())
    }

    /// The largest batch any step runs the model with.
    pub fn largest_batch(&self) -> usize {
        self.0
            .iter()
            .map(|s| s.needs().batch_size())
            .max()
            .unwrap_or(0)
            .max(EvaluateStep::default().batch_size)
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a pipeline always serialises")
    }
}

/// Only an entropy step may follow a step whose file no other step reads, and it comes last.
fn check_order(parsed: &[Step]) -> Result<(), ParseError> {
    let body = match parsed.last() {
        Some(Step::Entropy(_)) => &parsed[..parsed.len() - 1],
        _ => parsed,
    };
    if let Some(i) = parsed[..parsed.len() - 1]
        .iter()
        .position(|s| matches!(s, Step::Entropy(_)))
    {
        return Err(ParseError(format!(
            "pipeline[{i}] (entropy) codes the finished file, so it must be the last step"
        )));
    }
    if let Some(i) = body[..body.len().saturating_sub(1)]
        .iter()
        .position(|s| !s.writes_dense())
    {
        return Err(ParseError(format!(
            "pipeline[{i}] ({}) writes a quantized or sparse file, so it must be the last step (or be followed only by entropy); put prune steps first",
            parsed[i].op()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_defaults_and_round_trips() {
        let p =
            Pipeline::parse(&[json!({"op":"prune","method":"magnitude","sparsity":0.9})]).unwrap();
        assert_eq!(
            p.to_json(),
            json!([{"op":"prune","method":"magnitude","sparsity":0.9,"scope":"layer","store":"dense"}])
        );
        let back: Pipeline = serde_json::from_value(p.to_json()).unwrap();
        assert_eq!(back, p);
    }

    /// A pipeline read back from the store goes through the same checks as a request.
    #[test]
    fn deserializing_runs_the_checks() {
        for (bad, needle) in [
            (json!([]), "pipeline is empty"),
            (json!([{"op":"prune","sparsity":7.0}]), "between 0 and 1"),
            (
                json!([{"op":"quantize","scheme":"int8"},{"op":"prune","sparsity":0.5}]),
                "must be the last step",
            ),
            (
                json!([{"op":"finetune","init":"weights"}]),
                "init applies to train only",
            ),
        ] {
            let err = serde_json::from_value::<Pipeline>(bad.clone()).unwrap_err();
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn names_the_step_and_the_problem() {
        let err = Pipeline::parse(&[
            json!({"op":"prune","method":"magnitude","sparsity":0.5}),
            json!({"op":"quantise"}),
        ])
        .unwrap_err();
        assert!(
            err.0.starts_with("pipeline[1]: unknown op 'quantise'"),
            "{err}"
        );

        for (bad, needle) in [
            (
                json!({"op":"prune","method":"magnitude","sparsity":1.5}),
                "between 0 and 1",
            ),
            (
                json!({"op":"prune","method":"magnitude","threshold":-1.0}),
                "≥ 0",
            ),
            (json!({"op":"prune","method":"magnitude"}), "needs a target"),
            (
                json!({"op":"prune","method":"magnitude","sparsity":0.5,"threshold":0.1}),
                "not both",
            ),
            (
                json!({"op":"prune","method":"random","sparsity":0.5}),
                "unknown variant",
            ),
            (
                json!({"op":"prune","method":"magnitude","sparsity":0.5,"bogus":1}),
                "unknown field",
            ),
            (
                json!({"op":"prune","method":"magnitude","threshold":0.1,"scope":"global"}),
                "scope applies",
            ),
        ] {
            let err = Pipeline::parse(std::slice::from_ref(&bad)).unwrap_err();
            assert!(err.0.contains(needle), "{bad}: {err}");
        }
    }
}
