//! Text datasets: plain UTF-8 text, or JSON Lines with a `text` field per record. A dataset
//! has an evaluation part and a calibration part, cut by byte range (at line breaks) or by
//! document (records of JSON Lines, lines of plain text); by default the first half of the
//! bytes calibrates and the second half evaluates. Jobs tokenize a part with the model's own
//! tokenizer.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::CompressError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextFormat {
    Text,
    Jsonl,
}

/// How the parts are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitBy {
    Bytes,
    Documents,
}

/// The two parts, as half-open ranges of bytes or documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSplit {
    pub by: SplitBy,
    pub evaluation: [u64; 2],
    pub calibration: [u64; 2],
}

/// What an uploaded text holds; computed when it arrives and kept with the dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSummary {
    pub format: TextFormat,
    pub bytes: u64,
    /// Records (JSON Lines) or non-empty lines (plain text).
    pub documents: u64,
    pub split: TextSplit,
}

/// Which part a job reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Evaluation,
    Calibration,
}

fn bad(msg: String) -> CompressError {
    CompressError::InvalidModel(msg)
}

/// A JSON Lines record's text; `None` for a blank line.
fn record_text(line: &str, number: u64) -> Result<Option<String>, CompressError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| bad(format!("line {number} is not JSON: {e}")))?;
    match value.get("text") {
        Some(serde_json::Value::String(t)) => Ok(Some(t.clone())),
        _ => Err(bad(format!(
            "line {number} has no string 'text' field; each JSON Lines record needs one"
        ))),
    }
}

/// Reads the file a line at a time (never whole): checks it is UTF-8 and, for JSON Lines,
/// that every record has a `text`; counts documents; checks or makes the split.
pub fn inspect_text(path: &Path, split: Option<TextSplit>) -> Result<TextSummary, CompressError> {
    let bytes = std::fs::metadata(path)?.len();
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let (mut documents, mut number, mut jsonl) = (0u64, 0u64, None::<bool>);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        let text = std::str::from_utf8(&line).map_err(|e| {
            bad(format!(
                "line {number} is not UTF-8 text (byte {} of the line); upload UTF-8 text or JSON Lines",
                e.valid_up_to()
            ))
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let is_json = *jsonl.get_or_insert_with(|| text.trim_start().starts_with('{'));
        if is_json {
            record_text(text, number)?;
        }
        documents += 1;
    }
    if documents == 0 {
        return Err(bad("the text is empty".into()));
    }
    let format = if jsonl == Some(true) {
        TextFormat::Jsonl
    } else {
        TextFormat::Text
    };
    let split = match split {
        Some(s) => check_split(s, bytes, documents)?,
        None => TextSplit {
            by: SplitBy::Bytes,
            calibration: [0, bytes / 2],
            evaluation: [bytes / 2, bytes],
        },
    };
    Ok(TextSummary {
        format,
        bytes,
        documents,
        split,
    })
}

fn check_split(s: TextSplit, bytes: u64, documents: u64) -> Result<TextSplit, CompressError> {
    let (limit, unit) = match s.by {
        SplitBy::Bytes => (bytes, "bytes"),
        SplitBy::Documents => (documents, "documents"),
    };
    for (name, [a, b]) in [("evaluation", s.evaluation), ("calibration", s.calibration)] {
        if a > b || b > limit {
            return Err(CompressError::InvalidRequest(format!(
                "split.{name} [{a}, {b}) is not a range within the text's {limit} {unit}"
            )));
        }
    }
    if s.evaluation[0] == s.evaluation[1] {
        return Err(CompressError::InvalidRequest(
            "split.evaluation is empty".into(),
        ));
    }
    Ok(s)
}

/// The documents of one part: for plain text split by bytes, one document (the part's text,
/// from the first line that starts in it to the end of the last); otherwise the records or
/// lines in the part.
pub fn read_part(
    path: &Path,
    summary: &TextSummary,
    part: Part,
) -> Result<Vec<String>, CompressError> {
    let [start, end] = match part {
        Part::Evaluation => summary.split.evaluation,
        Part::Calibration => summary.split.calibration,
    };
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let (mut offset, mut number, mut index) = (0u64, 0u64, 0u64);
    let mut out = Vec::new();
    let mut joined = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)? as u64;
        if n == 0 {
            break;
        }
        number += 1;
        let begins = offset;
        offset += n;
        let blank = line.trim().is_empty();
        let inside = match summary.split.by {
            SplitBy::Bytes => begins >= start && begins < end,
            SplitBy::Documents => !blank && index >= start && index < end,
        };
        if !blank {
            index += 1;
        }
        if !inside {
            continue;
        }
        match (summary.format, summary.split.by) {
            (TextFormat::Jsonl, _) => out.extend(record_text(&line, number)?),
            (TextFormat::Text, SplitBy::Bytes) => joined.push_str(&line),
            (TextFormat::Text, SplitBy::Documents) => {
                out.push(line.trim_end_matches(['\n', '\r']).to_owned())
            }
        }
    }
    if !joined.is_empty() {
        out.push(joined);
    }
    if out.is_empty() {
        return Err(CompressError::InvalidRequest(format!(
            "the {} part of the text holds nothing",
            if part == Part::Evaluation {
                "evaluation"
            } else {
                "calibration"
            }
        )));
    }
    Ok(out)
}

/// A decoder's evaluation windows: the documents tokenized and joined, cut into windows of
/// `window` tokens starting every `stride` tokens, at most `max_tokens` tokens read; with `bos`
/// each window's first token is the BOS token.
pub fn windows(
    ids: &[u32],
    window: usize,
    stride: usize,
    max_tokens: usize,
    bos: Option<u32>,
) -> Vec<Vec<u32>> {
    let ids = &ids[..ids.len().min(max_tokens)];
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < ids.len() {
        let mut w = ids[start..(start + window).min(ids.len())].to_vec();
        if let Some(b) = bos {
            w[0] = b;
        }
        out.push(w);
        if start + window >= ids.len() {
            break;
        }
        start += stride;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_text_once() {
        let ids: Vec<u32> = (0..10).collect();
        let w = windows(&ids, 4, 4, usize::MAX, None);
        assert_eq!(w, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        let w = windows(&ids, 4, 4, 9, Some(99));
        assert_eq!(w, vec![vec![99, 1, 2, 3], vec![99, 5, 6, 7]]);
        assert!(windows(&[7], 4, 4, 100, None).is_empty());
    }

    #[test]
    fn parts_by_bytes_and_documents() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.txt");
        std::fs::write(&plain, "one\ntwo\n\nthree\nfour\n").unwrap();
        let s = inspect_text(&plain, None).unwrap();
        assert_eq!((s.format, s.documents, s.bytes), (TextFormat::Text, 4, 20));
        // A line belongs to the part its first byte is in: 'three' starts at byte 9 of 20.
        assert_eq!(
            read_part(&plain, &s, Part::Calibration).unwrap(),
            vec!["one\ntwo\n\nthree\n"]
        );
        assert_eq!(
            read_part(&plain, &s, Part::Evaluation).unwrap(),
            vec!["four\n"]
        );
        let jsonl = dir.path().join("b.jsonl");
        std::fs::write(
            &jsonl,
            "{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"text\":\"c\"}\n",
        )
        .unwrap();
        let split = TextSplit {
            by: SplitBy::Documents,
            evaluation: [2, 3],
            calibration: [0, 2],
        };
        let s = inspect_text(&jsonl, Some(split)).unwrap();
        assert_eq!(s.format, TextFormat::Jsonl);
        assert_eq!(read_part(&jsonl, &s, Part::Evaluation).unwrap(), vec!["c"]);
        assert_eq!(
            read_part(&jsonl, &s, Part::Calibration).unwrap(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn text_that_is_not_utf8_or_records_without_text_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let latin1 = dir.path().join("c.txt");
        std::fs::write(&latin1, b"caf\xe9\n").unwrap();
        let e = inspect_text(&latin1, None).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
        let jsonl = dir.path().join("d.jsonl");
        std::fs::write(&jsonl, "{\"text\":\"a\"}\n{\"body\":\"b\"}\n").unwrap();
        let e = inspect_text(&jsonl, None).unwrap_err().to_string();
        assert!(e.contains("line 2 has no string 'text'"), "{e}");
    }
}
