//! Where a config error points: the one shared context every validator
//! uses to turn a byte span into a [`ConfigError`] with the file, the
//! 1-based line and the `table.key` written there. In: the config text,
//! its path and a span or line; out: the positioned error. The message
//! itself is the validator's.

use std::ops::Range;
use std::path::Path;

use super::ConfigError;

/// The text being validated and the path its errors name.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a Path,
}

impl Ctx<'_> {
    /// An error at `span`: its line and the key written there.
    pub(super) fn err(&self, span: Range<usize>, message: String) -> ConfigError {
        let (line, key) = locate(self.text, Some(span));
        self.at(line, key, message)
    }

    /// An error at a line and key the caller knows.
    pub(super) fn at(&self, line: usize, key: String, message: String) -> ConfigError {
        ConfigError::Parse {
            path: self.path.to_path_buf(),
            line,
            key,
            message,
        }
    }

    /// serde's error, placed at its span; "unknown field" reads "unknown key".
    pub(super) fn toml(&self, e: &toml::de::Error) -> ConfigError {
        let (line, key) = locate(self.text, e.span());
        self.at(
            line,
            key,
            e.message().replace("unknown field", "unknown key"),
        )
    }

    /// The 1-based line `span` starts on.
    pub(super) fn line(&self, span: Range<usize>) -> usize {
        locate(self.text, Some(span)).0
    }
}

/// The 1-based line of `span`'s start, and `table.key: ` for the key
/// written on that line (or above it, for a value spread over lines).
fn locate(text: &str, span: Option<std::ops::Range<usize>>) -> (usize, String) {
    let Some(span) = span else {
        return (1, String::new());
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let mut table = String::new();
    let mut key = String::new();
    for (i, l) in text.lines().enumerate() {
        if i + 1 > line {
            break;
        }
        let l = l.trim();
        if l.starts_with('[') {
            table = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            key.clear();
        } else if let Some((k, _)) = l.split_once('=')
            && !l.starts_with('#')
        {
            key = k.trim().to_string();
        }
    }
    let full = match (table.is_empty(), key.is_empty()) {
        (_, true) if table.is_empty() => return (line, String::new()),
        (_, true) => table,
        (true, false) => key,
        (false, false) => format!("{table}.{key}"),
    };
    (line, format!("`{full}`: "))
}
