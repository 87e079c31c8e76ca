//! A Hugging Face model folder, checked and made into what compressd keeps: `config.json`
//! (read), the weights as one safetensors file (a single `model.safetensors` as it is, or the
//! shards an index names joined tensor by tensor, never whole in memory), and the other
//! files as they are. Whatever does not fit is refused naming the file and the tensor.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::format::chunked_io::map_chunk;
use crate::format::safetensors_index::SafetensorsIndex;
use crate::format::st_writer::SpooledWriter;
use crate::transformer::{tensors, ModelConfig, TextTokenizer};
use crate::CompressError;

/// One file of an uploaded folder: its path inside the folder, and where it is on disk.
#[derive(Debug, Clone)]
pub struct FolderFile {
    pub path: String,
    pub file: PathBuf,
}

#[derive(Debug)]
pub struct Assembled {
    pub config: Value,
    pub model_config: ModelConfig,
    /// The weights as one safetensors file (one of the uploaded files, or a new one).
    pub weights: PathBuf,
    /// Whether `weights` was written here (shards joined), rather than uploaded.
    pub joined: bool,
    /// Every other file, kept with the model.
    pub others: Vec<FolderFile>,
    /// What a user should know (a family compressd does not run, for instance).
    pub notes: Vec<String>,
}

const INDEX: &str = "model.safetensors.index.json";

fn bad(msg: String) -> CompressError {
    CompressError::InvalidModel(msg)
}

/// Checks the folder and, when its weights are sharded, joins them into `joined_path`.
pub fn assemble(files: &[FolderFile], joined_path: &Path) -> Result<Assembled, CompressError> {
    let by_path: HashMap<&str, &FolderFile> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let config_file = by_path.get("config.json").ok_or_else(|| {
        bad("the folder has no config.json: a Hugging Face model folder needs it (it names the architecture and its sizes); a bare safetensors file uploads as the `file` part".into())
    })?;
    let config: Value = serde_json::from_slice(&std::fs::read(&config_file.file)?)
        .map_err(|e| bad(format!("config.json is not JSON: {e}")))?;
    let model_config = ModelConfig::parse(&config)?;
    refuse_other_weights(&by_path)?;
    let (weights, joined, weight_files) = match (by_path.get(INDEX), by_path.get("model.safetensors")) {
        (Some(index), _) => {
            let shards = shards_of(index, &by_path)?;
            let mut used: Vec<String> = shards.iter().map(|s| s.path.clone()).collect();
            join(&shards, joined_path)?;
            used.push(INDEX.to_owned());
            (joined_path.to_owned(), true, used)
        }
        (None, Some(single)) => {
            SafetensorsIndex::open(&single.file).map_err(|e| in_file("model.safetensors", e.into()))?;
            (single.file.clone(), false, vec!["model.safetensors".to_owned()])
        }
        (None, None) => {
            return Err(bad(
                "the folder has neither model.safetensors nor model.safetensors.index.json with its shards".into(),
            ))
        }
    };
    let index = SafetensorsIndex::open(&weights)?;
    let mut notes = Vec::new();
    match &model_config.runs {
        Some(runs) => {
            let shapes: Vec<(&str, &[u64])> = index
                .tensors
                .iter()
                .map(|t| (t.name.as_str(), t.shape.as_slice()))
                .collect();
            tensors::check(runs, &shapes).map_err(|e| bad(format!("the weights do not fit config.json: {e}")))?;
        }
        None => notes.push(format!(
            "{} is not an architecture compressd runs ({}); the model is kept as weights only: pruning, quantization and export apply, evaluation does not",
            if model_config.architecture.is_empty() { "config.json names no architecture" } else { &model_config.architecture },
            crate::transformer::config::supported()
        )),
    }
    if let Some(tok) = by_path.get("tokenizer.json") {
        TextTokenizer::from_file(&tok.file)?;
    }
    let others = files
        .iter()
        .filter(|f| f.path != "config.json" && !weight_files.contains(&f.path))
        .cloned()
        .collect();
    Ok(Assembled {
        config,
        model_config,
        weights,
        joined,
        others,
        notes,
    })
}

fn in_file(path: &str, e: CompressError) -> CompressError {
    match e {
        CompressError::InvalidModel(m) => bad(format!("{path}: {m}")),
        other => other,
    }
}

/// Weights in a form compressd does not read are refused with what to do instead.
fn refuse_other_weights(by_path: &HashMap<&str, &FolderFile>) -> Result<(), CompressError> {
    let has_safetensors = by_path.contains_key("model.safetensors") || by_path.contains_key(INDEX);
    for path in by_path.keys() {
        let name = path.rsplit('/').next().unwrap_or(path);
        if !has_safetensors
            && (name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth"))
        {
            return Err(bad(format!(
                "{path} is a PyTorch checkpoint (pickle); compressd reads safetensors: save the model with save_pretrained(safe_serialization=True), or convert with safetensors.torch.save_file"
            )));
        }
        if name.ends_with(".gguf") {
            return Err(bad(format!("{path} is a GGUF file: upload it on its own (the `file` part), not inside a folder")));
        }
    }
    Ok(())
}

/// The shards the index names, each checked, with every tensor where the index says it is.
fn shards_of(
    index: &FolderFile,
    by_path: &HashMap<&str, &FolderFile>,
) -> Result<Vec<FolderFile>, CompressError> {
    let v: Value = serde_json::from_slice(&std::fs::read(&index.file)?)
        .map_err(|e| bad(format!("{INDEX} is not JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("{INDEX} has no weight_map")))?;
    let mut by_shard: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            bad(format!(
                "{INDEX}: the shard of '{tensor}' is not a file name"
            ))
        })?;
        by_shard.entry(shard.to_owned()).or_default().push(tensor);
    }
    let mut out = Vec::new();
    for (shard, listed) in &by_shard {
        let file = by_path.get(shard.as_str()).ok_or_else(|| {
            bad(format!(
                "{INDEX} names {shard}, which the upload does not hold"
            ))
        })?;
        let held = SafetensorsIndex::open(&file.file).map_err(|e| in_file(shard, e.into()))?;
        for t in listed {
            if !held.tensors.iter().any(|h| h.name == *t) {
                return Err(bad(format!(
                    "{INDEX} puts tensor '{t}' in {shard}, which does not hold it"
                )));
            }
        }
        if let Some(extra) = held
            .tensors
            .iter()
            .find(|h| !listed.contains(&h.name.as_str()))
        {
            return Err(bad(format!(
                "{shard} holds tensor '{}', which {INDEX} does not list",
                extra.name
            )));
        }
        out.push((*file).clone());
    }
    if out.is_empty() {
        return Err(bad(format!("{INDEX} lists no tensors")));
    }
    Ok(out)
}

/// Writes every shard's tensors, in order, into one safetensors file, copying each from its
/// mapped shard.
fn join(shards: &[FolderFile], out: &Path) -> Result<(), CompressError> {
    let indexes: Vec<SafetensorsIndex> = shards
        .iter()
        .map(|s| SafetensorsIndex::open(&s.file).map_err(CompressError::from))
        .collect::<Result<_, _>>()?;
    let reserve: u64 = indexes.iter().map(|i| i.header_len()).sum::<u64>() + 4096;
    let mut writer = SpooledWriter::in_place(out, reserve)?;
    for (shard, index) in shards.iter().zip(&indexes) {
        let file = File::open(&shard.file)?;
        for t in &index.tensors {
            let bytes = map_chunk(&file, index, (t.begin, t.byte_len() as usize))?;
            writer.add_streamed(&t.name, t.dtype.name(), &t.shape, |w: &mut dyn Write| {
                w.write_all(&bytes)
            })?;
        }
    }
    let metadata = indexes
        .first()
        .map(|i| i.metadata.clone())
        .unwrap_or_default();
    writer.finish(&metadata, out)?;
    Ok(())
}
