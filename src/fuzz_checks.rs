//! The properties the fuzz targets (`fuzz/`) check on arbitrary input, shared with the
//! regression test that replays the seed corpus and every input a fuzzer once crashed on.
//! Each function panics if and only if the property fails.

use crate::compress::SafetensorsIndex;
use crate::domain::{volume, Architecture, NamePattern, Pipeline};

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
        let parameters = arch.params().iter().try_fold(0u64, |sum, p| {
            volume(&p.shape).and_then(|n| sum.checked_add(n))
        });
        assert!(
            parameters.is_some_and(|n| n <= 1 << 28),
            "an accepted architecture has at most 2^28 parameters"
        );
        assert!(arch.max_activation() <= 1 << 26);
        let _ = arch.largest_unfold();
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

/// Any bytes as a model file that compressd reads back (sparse bitmasks, k-means codes,
/// quantized codes): refused or read, never a panic, and what is read holds as many values
/// as its shape says. Run under a memory limit, so a forged shape that makes it allocate what
/// the file does not hold is a finding.
pub fn compressed_reader(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("model.safetensors");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(tensors) = crate::compress::format::reader::read_dense(&path) {
        for (name, (shape, values)) in &tensors {
            let n = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            assert_eq!(n, Some(values.len() as u64), "{name}: shape {shape:?}");
        }
    }
}

/// A tensor-name pattern (first line) against a name (the rest): the linear-time matcher
/// agrees with the textbook one.
pub fn glob(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, name) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(p) = NamePattern::try_from(pattern.to_owned()) else {
        return;
    };
    assert_eq!(
        p.matches(name),
        reference_match(pattern.as_bytes(), name.as_bytes()),
        "{pattern:?} against {name:?}"
    );
}

/// Wildcard matching by dynamic programming over (pattern, name) prefixes: obviously right,
/// quadratic, for checking the fast one on small inputs.
fn reference_match(pattern: &[u8], name: &[u8]) -> bool {
    let mut row = vec![false; name.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        if p == b'*' {
            let mut any = false;
            for j in 0..=name.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=name.len() {
                next[j] = row[j - 1] && name[j - 1] == p;
            }
        }
        row = next;
    }
    row[name.len()]
}

/// Any bytes as an uploaded GGUF file: refused or read, never a panic or an allocation the
/// file does not back; what is read lies inside the file and dequantizes to its shape.
pub fn gguf_header(data: &[u8]) {
    use crate::compress::format::gguf::reader::GgufIndex;
    if let Ok(index) = GgufIndex::parse(data) {
        for t in &index.tensors {
            assert!(
                t.begin + t.byte_len <= data.len() as u64,
                "{} lies inside the file",
                t.name
            );
            if t.byte_len <= 1 << 20 {
                let values = index
                    .dequantize(data, t)
                    .expect("a tensor that was read dequantizes");
                let n: u64 = t.shape.iter().product();
                assert_eq!(values.elem_count() as u64, n);
            }
        }
        let _ = crate::compress::transformer::gguf_import::inspect(&index);
    }
}
