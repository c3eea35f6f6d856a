//! `rs-hello`: the Go PDK's classic example, in Rust.

use crate::{Flow, Pdk, Plugin, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// Configuration of `rs-hello`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HelloConfig {
    /// Sent as the `X-Hello-From-Rust` response header, or as the body when `deny_status` is set.
    #[schemars(length(min = 1, max = 8192))]
    pub message: String,
    /// When set, answer with this status and `message` as the body instead of proxying.
    #[schemars(range(min = 400, max = 599))]
    pub deny_status: Option<u16>,
}

/// Sets `X-Hello-From-Rust: <message>` on every response, or, with
/// `deny_status`, answers that status with `message` as the body.
#[derive(Debug)]
pub struct Hello {
    message: Vec<u8>,
    deny_status: Option<u16>,
}

/// The response header `rs-hello` sets.
pub const HELLO_HEADER: &str = "X-Hello-From-Rust";

#[crate::plugin]
impl Plugin for Hello {
    type Config = HelloConfig;
    type State = ();
    const NAME: &'static str = "rs-hello";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 1000;

    fn new(config: HelloConfig) -> Result<Self> {
        if let Some(status) = config.deny_status
            && !(400..=599).contains(&status)
        {
            return Err(format!("deny_status must be between 400 and 599, got {status}").into());
        }
        if config.message.is_empty() || config.message.len() > 8192 {
            return Err(format!(
                "message must be 1 to 8192 bytes long, got {}",
                config.message.len()
            )
            .into());
        }
        // Only the header use forbids control characters (RFC 9110 field
        // values: no CR, LF or NUL; HTAB is fine).
        if config.deny_status.is_none()
            && config
                .message
                .bytes()
                .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(
                "message must not contain CR or LF or other control characters: it is sent as a header value"
                    .into(),
            );
        }
        Ok(Hello {
            message: config.message.into_bytes(),
            deny_status: config.deny_status,
        })
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        if let Some(status) = self.deny_status {
            return Ok(Flow::exit(status, self.message.clone()));
        }
        kong.response().set_header(HELLO_HEADER, &self.message)?;
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Exit, MockPdk, Phase, run_request};

    fn config(message: &str, deny_status: Option<u16>) -> HelloConfig {
        HelloConfig {
            message: message.to_string(),
            deny_status,
        }
    }

    #[test]
    fn sets_the_header_and_lets_the_request_through() {
        let mut kong = MockPdk::get("/anything");
        let flow = run_request::<Hello>(config("hi there", None), &mut kong).expect("runs");
        assert_eq!(flow, Flow::Continue);
        assert_eq!(
            kong.response_header("x-hello-from-rust"),
            Some(&b"hi there"[..])
        );
        assert_eq!(kong.service_status, Some(200), "proxied");
    }

    #[test]
    fn deny_status_answers_with_the_message_and_does_not_proxy() {
        let mut kong = MockPdk::get("/");
        let flow = run_request::<Hello>(config("go away", Some(403)), &mut kong).expect("runs");
        assert_eq!(flow, Flow::Exit(Exit::new(403).body("go away")));
        assert_eq!(kong.status, 403);
        assert_eq!(kong.service_status, None, "upstream not called");
        assert!(kong.response_header(HELLO_HEADER).is_none());
    }

    #[test]
    fn constructor_refuses_bad_configs_with_a_clear_message() {
        let err = Hello::new(config("x", Some(200))).expect_err("200 refused");
        assert_eq!(
            err.message(),
            "deny_status must be between 400 and 599, got 200"
        );
        let err = Hello::new(config("a\r\nSet-Cookie: x", None)).expect_err("CRLF refused");
        assert!(err.message().contains("CR or LF"));
        assert!(Hello::new(config("multi\nline body", Some(418))).is_ok());
        let err = Hello::new(config("nul\0byte", None)).expect_err("NUL refused");
        assert!(err.message().contains("control characters"));
        assert!(Hello::new(config("tab\tok", None)).is_ok());
        let err = Hello::new(config(&"x".repeat(8193), Some(403))).expect_err("too long");
        assert_eq!(
            err.message(),
            "message must be 1 to 8192 bytes long, got 8193"
        );
    }

    #[test]
    fn a_pdk_error_reaches_the_plugin_as_err() {
        let mut kong = MockPdk::get("/").fail("response.set_header", "headers already sent");
        let err = run_request::<Hello>(config("hi", None), &mut kong).expect_err("propagates");
        assert_eq!(err.message(), "headers already sent");
    }

    #[test]
    fn only_access_is_registered() {
        assert_eq!(Hello::PHASES, &[Phase::Access]);
    }
}
