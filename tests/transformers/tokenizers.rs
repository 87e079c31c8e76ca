//! Token ids against Python `tokenizers` on 2 700 words of varied text: digits, numbers,
//! punctuation, code, accents, CJK, emoji, tabs and runs of spaces.

use compressd::compress::transformer::TextTokenizer;

use crate::fixtures::dir;

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(dir("token_ids.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn byte_level_bpe_ids_equal_pythons() {
    let tok = TextTokenizer::from_file(&dir("bpe.tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(dir("text.txt")).unwrap();
    let want = expected();
    assert_eq!(tok.encode(&text, false).unwrap(), ids(&want["bpe_text"]));
    for (line, ids_) in text.lines().zip(want["bpe_lines"].as_array().unwrap()) {
        assert_eq!(tok.encode(line, false).unwrap(), ids(ids_), "{line:?}");
    }
}

#[test]
fn wordpiece_ids_with_special_tokens_equal_pythons() {
    let tok = TextTokenizer::from_file(&dir("wordpiece.tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(dir("text.txt")).unwrap();
    let want = expected();
    for (line, ids_) in text
        .lines()
        .zip(want["wordpiece_lines"].as_array().unwrap())
    {
        assert_eq!(tok.encode(line, true).unwrap(), ids(ids_), "{line:?}");
    }
}

#[test]
fn a_tokenizer_that_does_not_parse_is_refused() {
    let err = TextTokenizer::from_bytes(b"{\"model\": 3}").err().unwrap();
    assert!(
        err.to_string().contains("tokenizer.json does not parse"),
        "{err}"
    );
}
