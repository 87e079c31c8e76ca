//! Streaming tensor bytes: positioned reads into a reused buffer, and a writer thread so that
//! writing one chunk overlaps reading and pruning the next. Reads go through `pread` rather
//! than a memory map so that resident memory stays at a few chunks whatever the model size.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::control::Control;
use super::safetensors_index::{SafetensorsIndex, TensorEntry};
use super::CompressError;

pub const CHUNK_BYTES: usize = 8 << 20;

/// A tensor's byte range cut into chunks of whole elements: (offset in data section, length).
pub fn chunks(tensor: &TensorEntry) -> impl Iterator<Item = (u64, usize)> + '_ {
    let width = tensor.dtype.size();
    let step = ((CHUNK_BYTES / width) * width) as u64;
    (tensor.begin..tensor.end)
        .step_by(step as usize)
        .map(move |offset| (offset, (tensor.end - offset).min(step) as usize))
}

/// Reads one chunk into `buf`, resized to fit.
pub fn read_chunk(
    file: &File,
    index: &SafetensorsIndex,
    (offset, len): (u64, usize),
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    buf.resize(len, 0);
    file.read_exact_at(buf, index.data_start + offset)
}

/// Visits a tensor's bytes chunk by chunk, checking for interruption and counting progress
/// between chunks.
pub fn for_each_chunk(
    file: &File,
    index: &SafetensorsIndex,
    tensor: &TensorEntry,
    buf: &mut Vec<u8>,
    control: &Control,
    mut visit: impl FnMut(&[u8]),
) -> Result<(), CompressError> {
    for chunk in chunks(tensor) {
        control.checkpoint()?;
        read_chunk(file, index, chunk, buf)?;
        visit(buf);
        control.advance(chunk.1 as u64);
    }
    Ok(())
}

/// Writes buffers on its own thread, handing them back for reuse.
pub struct PipelinedWriter {
    to_writer: Option<SyncSender<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<File>>>,
}

impl PipelinedWriter {
    pub fn new(mut file: File) -> Self {
        let (to_writer, inbox) = sync_channel::<Vec<u8>>(1);
        let (give_back, recycled) = sync_channel::<Vec<u8>>(3);
        let thread = std::thread::spawn(move || {
            for buf in inbox {
                file.write_all(&buf)?;
                let _ = give_back.try_send(buf);
            }
            // No fsync here: intermediate files need none, and a kept output is synced
            // once, when blob storage commits it.
            file.flush()?;
            Ok(file)
        });
        PipelinedWriter {
            to_writer: Some(to_writer),
            recycled,
            thread: Some(thread),
        }
    }

    /// A buffer to fill: one the writer has finished with, or a new one.
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut buf = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK_BYTES));
        buf.clear();
        buf
    }

    pub fn write(&mut self, buf: Vec<u8>) -> io::Result<()> {
        let sender = self.to_writer.as_ref().expect("writer open");
        if sender.send(buf).is_err() {
            // The thread stopped early: its result holds the error.
            return Err(self.join().err().unwrap_or_else(|| {
                io::Error::other("the writer thread stopped without an error")
            }));
        }
        Ok(())
    }

    /// Waits for every buffer to be written and returns the file.
    pub fn finish(mut self) -> io::Result<File> {
        self.join()
    }

    fn join(&mut self) -> io::Result<File> {
        self.to_writer.take();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked"))),
            None => Err(io::Error::other("the writer was already closed")),
        }
    }
}

impl Drop for PipelinedWriter {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

/// Copies the 8-byte length and the header verbatim: pruning keeps every offset.
pub fn copy_header(input: &File, index: &SafetensorsIndex) -> io::Result<Vec<u8>> {
    let mut header = vec![0u8; index.data_start as usize];
    input.read_exact_at(&mut header, 0)?;
    Ok(header)
}
