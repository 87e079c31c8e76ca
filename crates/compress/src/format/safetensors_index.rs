//! Reads and checks a safetensors header without trusting it: every offset, shape and dtype is
//! verified against the file before any tensor byte is read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::format::dtype::Dtype;

/// Headers larger than this are refused; real ones are kilobytes to a few megabytes.
/// The largest models people deploy have headers of a few hundred KiB per file; parsing a
/// header costs many times its size in memory, so a bound here bounds every upload.
pub const MAX_HEADER_BYTES: u64 = 16 * 1024 * 1024;
/// Tensors in one file: far above any model (a 70B-parameter transformer has under a thousand
/// per shard), and a bound on every per-tensor list the service keeps and shows.
pub const MAX_TENSORS: usize = 65_536;
const MAX_RANK: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct FormatError(pub String);

fn bad(msg: impl Into<String>) -> FormatError {
    FormatError(msg.into())
}

/// One tensor of a file. Serialises as `{name, dtype, shape}`, the form kept in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    #[serde(serialize_with = "ser_dtype", deserialize_with = "de_dtype")]
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Byte range inside the data section (after the header).
    #[serde(skip)]
    pub begin: u64,
    #[serde(skip)]
    pub end: u64,
}

fn ser_dtype<S: serde::Serializer>(d: &Dtype, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

fn de_dtype<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Dtype, D::Error> {
    let name = String::deserialize(d)?;
    Dtype::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown dtype {name}")))
}

impl TensorEntry {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    pub fn byte_len(&self) -> u64 {
        self.end - self.begin
    }

    /// A weight in the default selection: prunable float with two or more dimensions.
    pub fn is_weight(&self) -> bool {
        self.dtype.is_prunable() && self.shape.len() >= 2
    }
}

#[derive(Debug, Clone)]
pub struct SafetensorsIndex {
    /// Tensors in file order (ascending offsets).
    pub tensors: Vec<TensorEntry>,
    pub metadata: BTreeMap<String, String>,
    /// Absolute file offset where tensor data begins (8 + header length).
    pub data_start: u64,
    pub file_len: u64,
}

impl SafetensorsIndex {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let mut file = File::open(path)?;
        let file_len = file.metadata()?.len();
        if file_len < 8 {
            return Err(bad(format!(
                "file is {file_len} bytes long; a safetensors file starts with an 8-byte header length"
            ))
            .into());
        }
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes)?;
        let header_len = check_header_len(u64::from_le_bytes(len_bytes), file_len)?;
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)?;
        let data_len = file_len - 8 - header_len;
        Ok(Self::parse(&header, data_len, 8 + header_len, file_len)?)
    }

    /// Checks a whole file held in memory, as `open` checks one on disk (the fuzz target's
    /// entry point).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        let file_len = bytes.len() as u64;
        let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(bad(format!(
                "file is {file_len} bytes long; a safetensors file starts with an 8-byte header length"
            )));
        };
        let header_len = check_header_len(u64::from_le_bytes(*len_bytes), file_len)?;
        let header = &rest[..header_len as usize];
        Self::parse(header, file_len - 8 - header_len, 8 + header_len, file_len)
    }

    fn parse(
        header: &[u8],
        data_len: u64,
        data_start: u64,
        file_len: u64,
    ) -> Result<Self, FormatError> {
        let text = std::str::from_utf8(header)
            .map_err(|e| bad(format!("header is not valid UTF-8: {e}")))?;
        if !text.trim_start().starts_with('{') {
            return Err(bad(
                "header is not a JSON object: the file is not safetensors",
            ));
        }
        let root: serde_json::Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;

        let listed = root.len() - usize::from(root.contains_key("__metadata__"));
        if listed > MAX_TENSORS {
            return Err(bad(format!(
                "the header lists {listed} tensors; at most {MAX_TENSORS} are accepted in one file"
            )));
        }
        let mut metadata = BTreeMap::new();
        let mut tensors = Vec::with_capacity(root.len());
        for (name, value) in root {
            if name == "__metadata__" {
                metadata = parse_metadata(value)?;
            } else {
                tensors.push(parse_entry(name, &value, data_len)?);
            }
        }
        if tensors.is_empty() {
            return Err(bad("the file holds no tensors"));
        }
        tensors.sort_by_key(|t| (t.begin, t.end));
        let mut expected = 0u64;
        for t in &tensors {
            if t.begin != expected {
                let what = if t.begin < expected {
                    "overlaps"
                } else {
                    "leaves a gap after"
                };
                return Err(bad(format!(
                    "tensor '{}' starts at data byte {} and {what} the previous tensor, which ends at {expected}; tensors must be packed back to back",
                    t.name, t.begin
                )));
            }
            expected = t.end;
        }
        if expected != data_len {
            return Err(bad(format!(
                "tensors end at data byte {expected} but the data section is {data_len} bytes: {} trailing bytes belong to no tensor",
                data_len - expected
            )));
        }
        Ok(SafetensorsIndex {
            tensors,
            metadata,
            data_start,
            file_len,
        })
    }

    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorEntry::numel).sum()
    }

    pub fn header_len(&self) -> u64 {
        self.data_start - 8
    }
}

/// The header length field, if it fits the file (of at least 8 bytes) and the size cap.
fn check_header_len(header_len: u64, file_len: u64) -> Result<u64, FormatError> {
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length field says {header_len} bytes; headers over {MAX_HEADER_BYTES} bytes are refused (is this a safetensors file?)"
        )));
    }
    if header_len > file_len - 8 {
        return Err(bad(format!(
            "header length field says {header_len} bytes but only {} bytes follow it: the file is truncated or not safetensors",
            file_len - 8
        )));
    }
    Ok(header_len)
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("reading the model file: {0}")]
    Io(#[from] std::io::Error),
}

fn parse_metadata(value: Value) -> Result<BTreeMap<String, String>, FormatError> {
    let Value::Object(map) = value else {
        return Err(bad("__metadata__ must be an object of string values"));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(bad(format!(
                "__metadata__ value for '{k}' must be a string"
            ))),
        })
        .collect()
}

fn parse_entry(name: String, value: &Value, data_len: u64) -> Result<TensorEntry, FormatError> {
    let ctx = |msg: String| bad(format!("tensor '{name}': {msg}"));
    let obj = value
        .as_object()
        .ok_or_else(|| ctx("entry must be an object with dtype, shape and data_offsets".into()))?;
    if let Some(extra) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(ctx(format!("unexpected field '{extra}'")));
    }
    let dtype_name = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| ctx("missing or non-string dtype".into()))?;
    let dtype = Dtype::parse(dtype_name).ok_or_else(|| {
        ctx(format!(
            "unknown dtype '{dtype_name}'; known: {}",
            Dtype::known_names()
        ))
    })?;
    let shape: Vec<u64> = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| ctx("missing shape array".into()))?
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| ctx(format!("shape entry {d} is not a non-negative integer")))
        })
        .collect::<Result<_, _>>()?;
    if shape.len() > MAX_RANK {
        return Err(ctx(format!(
            "rank {} is absurd (at most {MAX_RANK})",
            shape.len()
        )));
    }
    let offsets = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or_else(|| ctx("data_offsets must be an array [begin, end]".into()))?;
    let (begin, end) = match (offsets[0].as_u64(), offsets[1].as_u64()) {
        (Some(b), Some(e)) if b <= e => (b, e),
        _ => {
            return Err(ctx(
                "data_offsets must be non-negative integers with begin ≤ end".into(),
            ))
        }
    };
    let bytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            ctx(format!(
                "shape {shape:?} is absurd: its byte size overflows"
            ))
        })?;
    if end - begin != bytes {
        return Err(ctx(format!(
            "shape {shape:?} of {} needs {bytes} bytes but data_offsets [{begin}, {end}] span {}",
            dtype.name(),
            end - begin
        )));
    }
    if end > data_len {
        return Err(ctx(format!(
            "data_offsets end at byte {end} but the data section is only {data_len} bytes (file truncated?)"
        )));
    }
    Ok(TensorEntry {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(header: &str, data_len: u64) -> Result<SafetensorsIndex, FormatError> {
        SafetensorsIndex::parse(header.as_bytes(), data_len, 8 + header.len() as u64, 0)
    }

    /// A header listing more tensors than any model has is refused before the entries are
    /// turned into tensors (an 800 000-tensor header once cost gigabytes per upload).
    #[test]
    fn refuses_more_tensors_than_any_model_has() {
        let entries = |n: usize| {
            let body: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        r#""t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{}]}}"#,
                        i + 1
                    )
                })
                .collect();
            format!("{{{}}}", body.join(","))
        };
        assert!(parse(&entries(MAX_TENSORS), MAX_TENSORS as u64).is_ok());
        match parse(&entries(MAX_TENSORS + 1), MAX_TENSORS as u64 + 1) {
            Err(err) => assert!(err.0.contains("at most 65536"), "{err}"),
            Ok(index) => panic!("{} tensors accepted", index.tensors.len()),
        }
    }

    #[test]
    fn accepts_a_packed_file_and_sorts_by_offset() {
        let idx = parse(
            r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}"#,
            16,
        )
        .unwrap();
        assert_eq!(idx.tensors[0].name, "a");
        assert_eq!(idx.parameter_count(), 6);
        assert_eq!(idx.metadata["format"], "pt");
    }

    #[test]
    fn names_the_faulty_tensor() {
        for (header, len, needle) in [
            (
                r#"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#,
                4,
                "unknown dtype 'F33'",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                4,
                "needs 8 bytes",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                2,
                "file truncated",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#,
                6,
                "overlaps",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                8,
                "trailing",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#,
                4,
                "overflows",
            ),
            (r#"{"a":[1]}"#, 4, "must be an object"),
            (r#"{"a":"#, 4, "not valid JSON"),
            (r#"{}"#, 0, "no tensors"),
        ] {
            let err = parse(header, len).unwrap_err();
            assert!(err.0.contains(needle), "{header}: {err}");
        }
    }
}
