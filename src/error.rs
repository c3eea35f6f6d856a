//! The error type of plugin code and PDK calls.

use std::fmt;

/// A failure in a plugin: a constructor refusing a config, a phase method
/// giving up, or a PDK call whose Lua side raised an error.
///
/// The message is what users and operators see: the Admin API returns a
/// constructor's message in its 400, and a phase's message is logged with the
/// plugin name and the phase before the request is answered 500.
#[derive(Debug)]
pub struct Error {
    message: String,
    source: Option<Box<dyn std::error::Error + 'static>>,
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with `message` and no underlying cause.
    pub fn msg(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            source: None,
        }
    }

    /// Wraps `source`, prefixing its text with `context` (`"context: source"`).
    pub fn with_context(
        context: impl fmt::Display,
        source: impl std::error::Error + 'static,
    ) -> Self {
        Error {
            message: format!("{context}: {source}"),
            source: Some(Box::new(source)),
        }
    }

    /// The message, without the causes' text appended.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref()
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::msg(message)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::msg(message)
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error {
            message: error.to_string(),
            source: Some(Box::new(error)),
        }
    }
}

impl From<mlua::Error> for Error {
    fn from(error: mlua::Error) -> Self {
        // A Lua error raised by a PDK function arrives as a callback or runtime
        // error; show the Lua message itself rather than mlua's wrapping.
        let message = match &error {
            mlua::Error::RuntimeError(text) => text.clone(),
            mlua::Error::CallbackError { cause, .. } => cause.to_string(),
            mlua::Error::DeserializeError(text) => text.clone(),
            other => other.to_string(),
        };
        Error {
            message,
            source: Some(Box::new(error)),
        }
    }
}
