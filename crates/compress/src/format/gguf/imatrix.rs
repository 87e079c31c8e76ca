//! llama.cpp's importance matrix: for every block linear, Σ x_j² of each input column over the
//! calibration tokens and the number of tokens. Written in llama.cpp's GGUF imatrix format
//! (`general.type` imatrix, `<weight>.in_sum2` and `<weight>.counts` as F32 tensors, names
//! sorted, as `llama-imatrix` writes them), so that `llama-quantize --imatrix` reads it; and
//! turned into per-column importances the way llama-quantize does (Σx² / count, in f32).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::header::{header, Kv, TensorInfo};
use super::padding;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportanceMatrix {
    /// llama.cpp tensor name → (Σx² per input column, tokens seen).
    pub entries: BTreeMap<String, (Vec<f32>, u64)>,
    /// What the matrix was computed on.
    pub datasets: Vec<String>,
    /// Windows of calibration text, and their length in tokens.
    pub chunks: u32,
    pub chunk_size: u32,
}

impl ImportanceMatrix {
    /// The importance of each input column of `name`, as llama-quantize computes it from the
    /// file: Σx² / count in f32 (1 everywhere when no token was seen).
    pub fn importance(&self, name: &str) -> Option<Vec<f32>> {
        let (sums, count) = self.entries.get(name)?;
        let count = *count as f32;
        Some(if count > 0.0 {
            sums.iter().map(|s| s / count).collect()
        } else {
            vec![1.0; sums.len()]
        })
    }

    /// The file `llama-imatrix` would write: GGUF v3, metadata, then per weight in name order
    /// `in_sum2` [columns × 1] and `counts` [1 × 1].
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let kvs = vec![
            ("general.type".to_owned(), Kv::Str("imatrix".into())),
            (
                "imatrix.datasets".to_owned(),
                Kv::Strs(self.datasets.clone()),
            ),
            ("imatrix.chunk_count".to_owned(), Kv::U32(self.chunks)),
            ("imatrix.chunk_size".to_owned(), Kv::U32(self.chunk_size)),
        ];
        let mut tensors: Vec<(String, Vec<u64>, Vec<u8>)> = Vec::new();
        for (name, (sums, count)) in &self.entries {
            let data = sums.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((format!("{name}.in_sum2"), vec![sums.len() as u64, 1], data));
            let counts = (*count as f32).to_le_bytes().to_vec();
            tensors.push((format!("{name}.counts"), vec![1, 1], counts));
        }
        let infos: Vec<TensorInfo> = tensors
            .iter()
            .map(|(name, dims, data)| TensorInfo {
                name,
                dims: dims.clone(),
                type_id: 0, // F32
                bytes: data.len() as u64,
            })
            .collect();
        let h = header(&kvs, &infos)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        out.write_all(&h)?;
        for (_, _, data) in &tensors {
            out.write_all(data)?;
            out.write_all(&vec![0u8; padding(data.len() as u64)])?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    }
}
