//! Which tensors a step touches: `include` / `exclude` name patterns with `*` wildcards.

use serde::{Deserialize, Serialize};

/// A tensor-name pattern where `*` matches any run of characters (dots included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NamePattern(String);

impl TryFrom<String> for NamePattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 512 {
            return Err("a tensor name pattern must be 1 to 512 characters long".into());
        }
        if s.chars().any(char::is_control) {
            return Err(format!(
                "tensor name pattern {s:?} contains a control character"
            ));
        }
        Ok(NamePattern(s))
    }
}

impl From<NamePattern> for String {
    fn from(p: NamePattern) -> String {
        p.0
    }
}

impl NamePattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

/// Iterative wildcard match: linear in practice, no recursion, no regex engine.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `include: None` means the default: every floating-point tensor with two or more dimensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorSelection {
    pub include: Option<Vec<NamePattern>>,
    pub exclude: Vec<NamePattern>,
}

impl TensorSelection {
    /// `is_weight` tells whether the tensor is a floating-point tensor of rank two or more.
    pub fn selects(&self, name: &str, is_weight: bool) -> bool {
        let included = match &self.include {
            None => is_weight,
            Some(patterns) => patterns.iter().any(|p| p.matches(name)),
        };
        included && !self.exclude.iter().any(|p| p.matches(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> NamePattern {
        NamePattern::try_from(s.to_owned()).unwrap()
    }

    #[test]
    fn wildcards_match_like_shell_globs() {
        assert!(pat("*.weight").matches("fc1.weight"));
        assert!(pat("layers.*.attn.*").matches("layers.3.attn.q.weight"));
        assert!(!pat("*.weight").matches("fc1.bias"));
        assert!(pat("fc1.weight").matches("fc1.weight"));
        assert!(!pat("fc1.weight").matches("fc1.weights"));
        assert!(pat("*").matches(""));
    }

    #[test]
    fn default_selection_takes_weights_and_honours_exclude() {
        let sel = TensorSelection {
            include: None,
            exclude: vec![pat("head.*")],
        };
        assert!(sel.selects("fc1.weight", true));
        assert!(!sel.selects("fc1.bias", false));
        assert!(!sel.selects("head.weight", true));
    }
}
