//! What an uploaded single file is, from its first bytes (and its name): safetensors, GGUF,
//! or a format compressd does not read, which is refused saying what to do instead.

use std::io::Read;
use std::path::Path;

use super::error::ApiError;
use crate::domain::Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Safetensors,
    Gguf,
}

/// The kind of the file at `path`, or a 422 naming the format it is in and how to convert it.
pub fn sniff(path: &Path, file_name: Option<&str>) -> Result<FileKind, ApiError> {
    let mut head = [0u8; 16];
    let mut file = std::fs::File::open(path)?;
    let n = file.read(&mut head)?;
    let head = &head[..n];
    let name = file_name.unwrap_or_default().to_ascii_lowercase();
    let refuse = |what: &str, todo: &str| {
        Err(ApiError::new(
            Code::UnsupportedModel,
            format!("the upload is {what}; compressd reads safetensors (and GGUF). {todo}"),
        ))
    };
    const CONVERT: &str = "Save the weights with safetensors.torch.save_file(model.state_dict(), 'model.safetensors'), or a transformers model with save_pretrained(dir, safe_serialization=True) and upload the folder";
    if head.starts_with(b"GGUF") {
        return Ok(FileKind::Gguf);
    }
    if head.starts_with(b"PK\x03\x04") {
        return refuse(
            "a zip archive, as torch.save writes PyTorch checkpoints",
            CONVERT,
        );
    }
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return refuse(
            "a Python pickle (a PyTorch checkpoint from torch.save)",
            CONVERT,
        );
    }
    if name.ends_with(".onnx") {
        return refuse(
            "an ONNX model",
            "Export the original PyTorch or Hugging Face model to safetensors instead (ONNX graphs are not read)",
        );
    }
    if name.ends_with(".bin")
        || name.ends_with(".pt")
        || name.ends_with(".pth")
        || name.ends_with(".ckpt")
    {
        return refuse("named like a PyTorch checkpoint", CONVERT);
    }
    Ok(FileKind::Safetensors)
}
