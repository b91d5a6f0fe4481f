//! Config diagnostics: an error or warning tied to a byte span of the file, rendered in the
//! style of a compiler error (file:line:col, the offending line, a caret, key path, hint).
//! Pure; no I/O.

use std::fmt;
use std::ops::Range;

/// How bad a diagnostic is: errors stop the config from being used, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// What is wrong: "expected X, found Y".
    pub message: String,
    /// Byte range in the source file, when the finding has a place.
    pub span: Option<Range<usize>>,
    /// Key path such as `pool[1].backends[0].addr`.
    pub key_path: Option<String>,
    /// A suggestion for the fix.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            message: message.into(),
            span: None,
            key_path: None,
            help: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(message)
        }
    }

    pub fn at(mut self, span: Range<usize>) -> Self {
        self.span = Some(span);
        self
    }

    pub fn key(mut self, path: impl Into<String>) -> Self {
        self.key_path = Some(path.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders against the source it came from.
    pub fn render(&self, source: &Source) -> String {
        Rendered(self, source).to_string()
    }
}

/// A config file's name and text, kept so diagnostics can show the offending line.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    fn line_text(&self, line: usize) -> &str {
        self.text
            .lines()
            .nth(line - 1)
            .unwrap_or("")
            .trim_end_matches('\r')
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

struct Rendered<'a>(&'a Diagnostic, &'a Source);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Rendered(d, src) = self;
        let label = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{label}: {}", d.message)?;
        match &d.span {
            Some(span) => {
                let (line, col) = src.line_col(span.start);
                let text = src.line_text(line);
                let gutter = line.to_string().len();
                writeln!(f, "{:gutter$}--> {}:{line}:{col}", "", src.name)?;
                writeln!(f, "{:gutter$} |", "")?;
                writeln!(f, "{line} | {text}")?;
                let (end_line, end_col) = src.line_col(span.end);
                let width = if end_line == line && end_col > col {
                    end_col - col
                } else {
                    text.chars().count().saturating_sub(col - 1).max(1)
                };
                writeln!(
                    f,
                    "{:gutter$} | {:pad$}{}",
                    "",
                    "",
                    "^".repeat(width),
                    pad = col - 1
                )?;
            }
            None => writeln!(f, "  --> {}", src.name)?,
        }
        if let Some(key) = &d.key_path {
            writeln!(f, "  = key: {key}")?;
        }
        if let Some(help) = &d.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word` by edit distance, if close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_a_compiler_error() {
        let src = Source {
            name: "lb.toml".into(),
            text: "[global]\nworkers = \"two\"\n".into(),
        };
        let d = Diagnostic::error("expected an integer, found a string")
            .at(19..24)
            .key("global.workers")
            .help("write workers = 2");
        let out = d.render(&src);
        assert_eq!(
            out,
            "error: expected an integer, found a string\n --> lb.toml:2:11\n  |\n2 | workers = \"two\"\n  |           ^^^^^\n  = key: global.workers\n  = help: write workers = 2\n"
        );
    }

    #[test]
    fn suggests_near_keys_only() {
        assert_eq!(did_you_mean("wieght", &["weight", "addr"]), Some("weight"));
        assert_eq!(did_you_mean("zzzzzz", &["weight", "addr"]), None);
    }

    #[test]
    fn line_col_handles_multibyte() {
        let src = Source {
            name: "x".into(),
            text: "a = \"é\"\nb = 1".into(),
        };
        assert_eq!(src.line_col(9), (2, 1));
        assert_eq!(src.line_col(6), (1, 6));
    }
}
