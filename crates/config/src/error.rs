use std::fmt;
use std::path::PathBuf;

/// A configuration error, located as precisely as we can: file, document (1-based, with its kind
/// and name when known) and field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub document: Option<usize>,
    pub object: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            file: None,
            document: None,
            object: None,
            field: None,
            message: message.into(),
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The error of a nested block: its field gets the block's path in front (`spec.oidc.`).
    pub(crate) fn within(mut self, prefix: &str) -> Self {
        self.field = self.field.map(|f| format!("{prefix}{f}"));
        self
    }

    pub(crate) fn at(mut self, at: &Location) -> Self {
        self.file = Some(at.file.clone());
        self.document = Some(at.document);
        self.object = at.object.clone();
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(doc) = self.document {
                write!(f, ", document {doc}")?;
            }
            if let Some(object) = &self.object {
                write!(f, " ({object})")?;
            }
            write!(f, ": ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Where a manifest came from.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub file: PathBuf,
    pub document: usize,
    pub object: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file.display(), self.document)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        Ok(())
    }
}
