//! Reading a GGUF file's header (llama.cpp's format, versions 2 and 3) as hostile input: every
//! length, count and dimension is checked against the bytes that remain before anything is
//! allocated for it (candle's reader allocates whatever a header asks for), and every tensor's
//! data against the file's size. Tensors are then read one at a time through a memory map.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use memmap2::Mmap;

use crate::CompressError;

/// Tensors in one file, and keys of metadata, at most.
const MAX_TENSORS: u64 = 65_536;
const MAX_KEYS: u64 = 65_536;
const MAX_DIMS: u32 = 8;

#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U64(v) => Some(v),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            GgufValue::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GgufTensor {
    pub name: String,
    /// Row-major, outermost first (GGUF lists them innermost first).
    pub shape: Vec<u64>,
    pub ggml_type: u32,
    /// From the start of the file.
    pub begin: u64,
    pub byte_len: u64,
}

#[derive(Debug)]
pub struct GgufIndex {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensor>,
}

fn bad(msg: String) -> CompressError {
    CompressError::InvalidModel(format!("the GGUF file: {msg}"))
}

/// ggml's types: (candle's type, values per block, bytes per block).
pub fn ggml_type(id: u32) -> Option<(GgmlDType, u64, u64)> {
    let t = match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        30 => GgmlDType::BF16,
        _ => return None,
    };
    Some((t, t.block_size() as u64, t.type_size() as u64))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: u64, what: &str) -> Result<&[u8], CompressError> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(bad(format!(
                "{what} needs {n} bytes but only {left} remain (truncated or forged)"
            )));
        }
        let s = &self.bytes[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, CompressError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &str) -> Result<u64, CompressError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self, what: &str) -> Result<String, CompressError> {
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        Ok(String::from_utf8_lossy(bytes)
            .trim_end_matches('\0')
            .to_owned())
    }

    fn value(&mut self, kind: u32, depth: u32, what: &str) -> Result<GgufValue, CompressError> {
        let le = |b: &[u8]| {
            let mut a = [0u8; 8];
            a[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(a)
        };
        Ok(match kind {
            0 => GgufValue::U64(self.take(1, what)?[0] as u64),
            1 => GgufValue::I64(self.take(1, what)?[0] as i8 as i64),
            2 => GgufValue::U64(le(self.take(2, what)?)),
            3 => GgufValue::I64(
                i16::from_le_bytes(self.take(2, what)?.try_into().expect("2")) as i64,
            ),
            4 => GgufValue::U64(le(self.take(4, what)?)),
            5 => GgufValue::I64(
                i32::from_le_bytes(self.take(4, what)?.try_into().expect("4")) as i64,
            ),
            6 => GgufValue::F64(
                f32::from_le_bytes(self.take(4, what)?.try_into().expect("4")) as f64,
            ),
            7 => GgufValue::Bool(self.take(1, what)?[0] != 0),
            8 => GgufValue::Str(self.string(what)?),
            9 => {
                if depth > 2 {
                    return Err(bad(format!("{what}: arrays nested too deep")));
                }
                let inner = self.u32(what)?;
                let count = self.u64(what)?;
                // Each element takes at least this many bytes: a count past what remains is
                // forged, and is refused before anything is allocated for it.
                let least = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    9 => 12,
                    _ => 8,
                };
                let left = (self.bytes.len() - self.at) as u64;
                if count.saturating_mul(least) > left {
                    return Err(bad(format!(
                        "{what}: an array of {count} elements in {left} bytes"
                    )));
                }
                let mut items = Vec::with_capacity((count as usize).min(1 << 20));
                for _ in 0..count {
                    items.push(self.value(inner, depth + 1, what)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(self.u64(what)? as i64),
            12 => GgufValue::F64(f64::from_le_bytes(
                self.take(8, what)?.try_into().expect("8"),
            )),
            other => return Err(bad(format!("{what}: unknown value type {other}"))),
        })
    }
}

impl GgufIndex {
    pub fn open(path: &Path) -> Result<(GgufIndex, Mmap), CompressError> {
        let file = File::open(path)?;
        // SAFETY: stored files are immutable and work files belong to one attempt.
        let map = unsafe { Mmap::map(&file)? };
        let index = Self::parse(&map)?;
        Ok((index, map))
    }

    pub fn parse(bytes: &[u8]) -> Result<GgufIndex, CompressError> {
        let mut c = Cursor { bytes, at: 0 };
        if c.take(4, "the magic")? != b"GGUF" {
            return Err(bad("it does not start with 'GGUF'".into()));
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!("version {version}; versions 2 and 3 are read")));
        }
        let tensor_count = c.u64("the tensor count")?;
        let kv_count = c.u64("the metadata count")?;
        if tensor_count > MAX_TENSORS || kv_count > MAX_KEYS {
            return Err(bad(format!("{tensor_count} tensors and {kv_count} metadata keys; at most {MAX_TENSORS} of each are read")));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = c.string("a metadata key")?;
            let kind = c.u32(&key)?;
            let value = c.value(kind, 0, &key)?;
            metadata.insert(key, value);
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .filter(|a| a.is_power_of_two() && *a <= 1 << 20)
            .unwrap_or(32);
        let mut infos = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = c.string("a tensor name")?;
            let dims = c.u32(&name)?;
            if dims == 0 || dims > MAX_DIMS {
                return Err(bad(format!("tensor '{name}' has {dims} dimensions")));
            }
            let mut shape = Vec::with_capacity(dims as usize);
            for _ in 0..dims {
                shape.push(c.u64(&name)?);
            }
            if shape.contains(&0) {
                // Nothing to store, and the other dimensions' product would go unchecked.
                return Err(bad(format!(
                    "tensor '{name}' has a zero-length dimension ({shape:?})"
                )));
            }
            shape.reverse();
            let ggml = c.u32(&name)?;
            let offset = c.u64(&name)?;
            infos.push((name, shape, ggml, offset));
        }
        let data_start = (c.at as u64).div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, shape, ggml, offset) in infos {
            let (_, block, size) = ggml_type(ggml).ok_or_else(|| {
                bad(format!(
                    "tensor '{name}' has ggml type {ggml}, which compressd does not read"
                ))
            })?;
            let values = shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor '{name}': the shape {shape:?} overflows")))?;
            let cols = *shape.last().expect("rank ≥ 1");
            if cols % block != 0 {
                return Err(bad(format!(
                    "tensor '{name}': rows of {cols} values do not split into blocks of {block}"
                )));
            }
            let byte_len = (values / block)
                .checked_mul(size)
                .ok_or_else(|| bad(format!("tensor '{name}': the shape {shape:?} is too large")))?;
            let begin = data_start
                .checked_add(offset)
                .filter(|b| b % alignment == 0);
            match begin.and_then(|b| b.checked_add(byte_len)) {
                Some(end) if end <= file_len => {}
                _ => return Err(bad(format!("tensor '{name}' lies outside the file (offset {offset}, {byte_len} bytes; the file has {file_len})"))),
            }
            tensors.push(GgufTensor {
                name,
                shape,
                ggml_type: ggml,
                begin: begin.expect("checked"),
                byte_len,
            });
        }
        Ok(GgufIndex {
            version,
            metadata,
            tensors,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// One tensor, dequantized to f32 with its row-major shape.
    pub fn dequantize(&self, map: &[u8], t: &GgufTensor) -> Result<Tensor, CompressError> {
        let (dtype, _, _) = ggml_type(t.ggml_type).expect("checked when opened");
        let raw = &map[t.begin as usize..(t.begin + t.byte_len) as usize];
        // candle reads the bytes in place as its block structs, which needs them aligned: a
        // file whose general.alignment (or a buffer whose start) leaves them unaligned is read
        // from an aligned copy instead. A mapped file with the usual alignment of 32 needs none.
        let copy: Vec<u128>;
        let raw = if raw.as_ptr().align_offset(16) == 0 {
            raw
        } else {
            let mut buf = vec![0u128; raw.len().div_ceil(16)];
            bytemuck::cast_slice_mut::<u128, u8>(&mut buf)[..raw.len()].copy_from_slice(raw);
            copy = buf;
            &bytemuck::cast_slice::<u128, u8>(&copy)[..raw.len()]
        };
        let dims: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let q =
            candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, raw, dims, &Device::Cpu)
                .map_err(|e| bad(format!("tensor '{}': {e}", t.name)))?;
        q.dequantize(&Device::Cpu)
            .map_err(|e| bad(format!("tensor '{}': {e}", t.name)))
    }
}
