//! The error type of plugin code and PDK calls.

use std::fmt;

/// What kind of failure an [`Error`] is; more kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration the plugin refuses: the constructor's, or one that
    /// does not deserialise into the config type. The Admin API answers it
    /// with a 400.
    Config,
    /// A PDK call failed: Kong's Lua side raised an error (a call not
    /// allowed in this phase, a value Kong refuses, ...).
    Pdk,
    /// Reading or writing a file, a socket, ...
    Io,
    /// An awaited operation ran past its timeout (a socket's, or
    /// [`kong_rs::io::timeout`](crate::io::timeout)'s).
    Timeout,
    /// Anything else the plugin gave up on (the kind of [`Error::msg`]).
    Plugin,
}

/// A failure in a plugin: a constructor refusing a config, a phase method
/// giving up, or a PDK call whose Lua side raised an error.
///
/// The message is what users and operators see: the Admin API returns a
/// constructor's message in its 400, and a phase's message is logged with the
/// plugin name and the phase before the request is answered 500. It is
/// `Send + Sync`, so it travels through threads and `Box<dyn Error + Send +
/// Sync>` code; add context with [`Context::context`].
///
/// One pointer wide (the parts are boxed): a `Result<(), Error>` returned
/// by every phase and PDK call stays a word, and failures are the rare path.
pub struct Error(Box<Parts>);

struct Parts {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
}

/// The cause an error keeps, as `std::error::Error::source` hands it out.
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.0.kind)
            .field("message", &self.0.message)
            .field("source", &self.0.source)
            .finish()
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of kind [`ErrorKind::Plugin`] with `message` and no cause.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Plugin, message)
    }

    /// An error of `kind` with `message` and no cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::from_parts(kind, message.into(), None)
    }

    fn from_parts(kind: ErrorKind, message: String, source: Option<Source>) -> Self {
        Error(Box::new(Parts {
            kind,
            message,
            source,
        }))
    }

    /// Wraps `source`, prefixing its text with `context` (`"context: source"`).
    pub fn with_context(
        context: impl fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::from_parts(
            ErrorKind::Plugin,
            format!("{context}: {source}"),
            Some(Box::new(source)),
        )
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The message, without the causes' text appended.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// This error with `context` in front of its message (`"context:
    /// message"`), its kind and cause kept.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.0.message = format!("{context}: {}", self.0.message);
        self
    }
}

/// Adds context to a failure on its way up, as `anyhow::Context` or
/// Pingora's `OrErr` do: `kong.request().get_header("x")?` becomes
/// `kong.request().get_header("x").context("reading x")?`.
pub trait Context<T> {
    /// On failure, an [`Error`] whose message starts with `context`.
    ///
    /// # Errors
    /// When `self` is a failure (an `Err`, or `None`).
    fn context(self, context: impl fmt::Display) -> Result<T>;

    /// Like [`context`](Context::context), with the context computed only
    /// on failure.
    ///
    /// # Errors
    /// When `self` is a failure (an `Err`, or `None`).
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(context))
    }
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::msg(context.to_string()))
    }
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::msg(context().to_string()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
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
        Error::from_parts(ErrorKind::Io, error.to_string(), Some(Box::new(error)))
    }
}

impl Error {
    /// A Lua error as a PDK error: the Lua message itself rather than
    /// mlua's wrapping. Crate-private, so `mlua::Error` stays out of the
    /// public API.
    pub(crate) fn lua(error: mlua::Error) -> Self {
        let message = match &error {
            mlua::Error::RuntimeError(text) => text.clone(),
            mlua::Error::CallbackError { cause, .. } => cause.to_string(),
            mlua::Error::DeserializeError(text) => text.clone(),
            other => other.to_string(),
        };
        Error::from_parts(ErrorKind::Pdk, message, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn is_send_sync_with_a_kind_and_context() {
        assert_send_sync::<Error>();
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = Result::<()>::Err(io.into())
            .context("opening /x")
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Io);
        assert_eq!(error.to_string(), "opening /x: no such file");
        assert!(std::error::Error::source(&error).is_some());
        let missing = None::<u8>
            .with_context(|| "header x-a missing")
            .unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::Plugin);
        assert_eq!(missing.to_string(), "header x-a missing");
    }

    #[test]
    fn is_one_pointer_wide_and_debug_shows_its_parts() {
        // what a phase returns on success stays a word
        assert_eq!(size_of::<Result<()>>(), size_of::<usize>());
        let error = Error::new(ErrorKind::Timeout, "redis GET timed out");
        assert_eq!(
            format!("{error:?}"),
            r#"Error { kind: Timeout, message: "redis GET timed out", source: None }"#
        );
    }
}
