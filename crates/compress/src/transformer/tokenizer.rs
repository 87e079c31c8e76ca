//! Text to token ids with the model's own tokenizer (`tokenizer.json`, Hugging Face's
//! `tokenizers`), exactly as Python's `tokenizers` makes them; padding and truncation that
//! the file may carry are turned off (compressd cuts windows itself).

use std::path::Path;

use crate::CompressError;

pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self, CompressError> {
        let bytes = std::fs::read(path)?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CompressError> {
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
            CompressError::InvalidModel(format!("tokenizer.json does not parse: {e}"))
        })?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| CompressError::InvalidModel(format!("tokenizer.json: {e}")))?;
        Ok(TextTokenizer { inner })
    }

    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Self {
        TextTokenizer { inner }
    }

    /// Token ids of `text`; `special` adds what the tokenizer's post-processor adds (BERT's
    /// [CLS] and [SEP]).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, CompressError> {
        self.inner
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| CompressError::InvalidRequest(format!("tokenizing the text failed: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
