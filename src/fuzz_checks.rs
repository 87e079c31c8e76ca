//! The properties the fuzz targets (`fuzz/`) check on arbitrary input, shared with the
//! regression test that replays the seed corpus and every input a fuzzer once crashed on.
//! Each function panics if and only if the property fails.

use crate::compress::SafetensorsIndex;
use crate::domain::{Architecture, Pipeline};

/// Any bytes as an uploaded safetensors file: refused or accepted, and what is accepted is
/// self-consistent (tensors packed back to back, filling the data section).
pub fn safetensors_header(data: &[u8]) {
    if let Ok(index) = SafetensorsIndex::from_bytes(data) {
        let mut end = 0;
        for t in &index.tensors {
            assert_eq!(t.begin, end, "tensors are packed");
            assert!(t.end >= t.begin);
            end = t.end;
        }
        assert_eq!(
            index.data_start + end,
            data.len() as u64,
            "tensors fill the data section"
        );
    }
}

/// Any text as an architecture: parsed or refused; an accepted one reports its sizes and
/// survives a round trip through its JSON form.
pub fn architecture(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(arch) = Architecture::parse_json(text) {
        let _ = arch.params();
        let _ = arch.max_activation();
        let again = Architecture::parse_json(&arch.to_json().to_string()).expect("round trip");
        assert_eq!(again.to_json(), arch.to_json());
    }
}

/// Any JSON as a job's pipeline: parsed or refused; an accepted pipeline's canonical form
/// parses to itself (the results cache keys on it).
pub fn pipeline(data: &[u8]) {
    let Ok(serde_json::Value::Array(steps)) = serde_json::from_slice(data) else {
        return;
    };
    if let Ok(pipeline) = Pipeline::parse(&steps) {
        let canonical = pipeline.to_json();
        let steps = canonical
            .as_array()
            .expect("a pipeline is an array")
            .clone();
        let again = Pipeline::parse(&steps).expect("the canonical form parses");
        assert_eq!(again.to_json(), canonical);
    }
}
