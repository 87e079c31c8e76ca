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
        glob_match(&self.0, name)
    }
}

/// Wildcard match in time linear in the pattern and the name: `*` splits the pattern into
/// literal pieces; the first must start the name, the last must end it, and the ones between
/// are found left to right, each at its first place (which is never worse than a later one).
/// Substring search is linear (`str::find`), so no pattern can make a match slow.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = pieces.collect();
    let Some((last, middle)) = middle.split_last() else {
        // No `*`: the pattern is the whole name.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Patterns per `include` or `exclude` list: enough for any model's layer names, and a bound on
/// the work one request can ask for.
pub const MAX_PATTERNS: usize = 256;

/// `include: None` means the default: every floating-point tensor with two or more dimensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorSelection {
    pub include: Option<Vec<NamePattern>>,
    pub exclude: Vec<NamePattern>,
}

impl TensorSelection {
    /// A selection from a request's lists, refused when either holds more than
    /// [`MAX_PATTERNS`] patterns.
    pub fn new(
        include: Option<Vec<NamePattern>>,
        exclude: Vec<NamePattern>,
    ) -> Result<Self, crate::ParseError> {
        let longest = include.as_ref().map_or(0, Vec::len).max(exclude.len());
        if longest > MAX_PATTERNS {
            return Err(crate::ParseError(format!(
                "include and exclude take at most {MAX_PATTERNS} patterns each, got {longest}"
            )));
        }
        Ok(TensorSelection { include, exclude })
    }

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
        assert!(pat("a*b*c").matches("abc"));
        assert!(pat("a*b*c").matches("axxbyyc"));
        assert!(!pat("a*b*c").matches("axxbyy"));
        assert!(pat("*.attn.*.weight").matches("layers.0.attn.q.weight"));
        assert!(!pat("ab*ba").matches("aba"), "pieces may not overlap");
        assert!(pat("**").matches("x"));
    }

    /// Matches agree with a plain recursive definition of `*` on every short pattern and name.
    #[test]
    fn agrees_with_the_definition() {
        fn reference(p: &[u8], t: &[u8]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some((b'*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
                Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
            }
        }
        let alphabet = ["", "a", "b", "*"];
        let mut patterns = vec![String::new()];
        for _ in 0..4 {
            patterns = patterns
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
        }
        let texts = ["", "a", "b", "ab", "ba", "aab", "abab", "bba", "aaaa"];
        for p in patterns.iter().filter(|p| !p.is_empty()) {
            for t in texts {
                assert_eq!(
                    pat(p).matches(t),
                    reference(p.as_bytes(), t.as_bytes()),
                    "{p:?} on {t:?}"
                );
            }
        }
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
