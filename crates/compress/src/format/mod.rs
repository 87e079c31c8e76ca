//! File formats, read and written a tensor at a time: safetensors (the index that checks a
//! header, a streaming writer, a reader that restores compressd's own layouts), GGUF, the
//! bitmask-v1 sparse layout, dtypes, chunked I/O through memory maps, and zstd entropy coding.

pub mod chunked_io;
pub mod dtype;
pub mod entropy;
pub mod gguf;
pub mod hf_folder;
pub mod reader;
pub mod safetensors_index;
pub mod sparse;
pub mod st_writer;
