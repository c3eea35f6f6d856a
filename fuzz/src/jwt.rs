//! The `jwt_token` target: arbitrary bytes as a bearer token for rs-jwt.
//!
//! The first byte chooses where the rest travels (even: `Authorization:
//! Bearer …`, odd: the `jwt` query parameter, escaped as a client would);
//! the rest is the token. Promises checked:
//! - the parser never panics; what it accepts splits back into the bytes
//!   it was given (signing input, `.`, signature);
//! - the plugin never errs (a 500) on any token: it answers a 401 with a
//!   JSON object body and `WWW-Authenticate`, or lets the request through;
//! - it lets a request through only when the token is an HS256 token whose
//!   HMAC verifies with the configured secret (checked here with
//!   jsonwebtoken directly): no token is accepted by mistake.

use crate::reached::{self, hit};
use kong_rs::plugins::jwt_token::{self, Alg};
use kong_rs::plugins::{Jwt, JwtConfig};
use kong_rs::{Flow, MockPdk, Phase, Plugin};
use serde_json::{Value, json};
use std::rc::Rc;

/// The secret of the corpus' valid tokens (kid `k`).
pub const SECRET: &str = "fuzz-secret";

thread_local! {
    static PLUGIN: Rc<Jwt> = {
        let config: JwtConfig = serde_json::from_value(json!({
            "algorithms": ["HS256", "RS256", "ES256", "EdDSA"],
            "keys": [{ "kid": "k", "secret": SECRET }],
            "claims_to_headers": { "sub": "X-Sub" },
        }))
        .expect("the fuzz config");
        Rc::new(Jwt::new(config).expect("the fuzz config is valid"))
    };
}

fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// See the [module](self) documentation.
pub fn jwt_token(data: &[u8]) {
    let Some((&mode, token)) = data.split_first() else {
        return;
    };
    if let Ok(parsed) = jwt_token::parse(token) {
        hit(&reached::JWT_PARSED);
        let mut rebuilt = parsed.signing_input.to_vec();
        rebuilt.push(b'.');
        rebuilt.extend_from_slice(parsed.signature_b64.as_bytes());
        assert_eq!(rebuilt, token, "a parsed token is its own bytes");
    }
    let mut kong = if mode % 2 == 0 {
        let mut header = b"Bearer ".to_vec();
        header.extend_from_slice(token);
        MockPdk::get("/").with_header("authorization", header)
    } else {
        MockPdk::get(&format!("/?jwt={}", escape(token)))
    };
    kong.phase = Some(Phase::Access);
    let plugin = PLUGIN.with(Rc::clone);
    let flow = kong_rs::io::block_on(async move { plugin.access_async(&mut kong, &mut ()).await })
        .expect("the task runs")
        .expect("rs-jwt never errs on a token");
    match flow {
        Flow::Exit(exit) => {
            assert_eq!(exit.status, 401);
            let body: Value = serde_json::from_slice(exit.body.as_deref().unwrap_or_default())
                .expect("a JSON body");
            assert!(body.is_object() && !body.as_object().unwrap().is_empty());
            hit(&reached::JWT_REFUSED);
        }
        Flow::Continue => {
            let parsed = jwt_token::parse(token).expect("an accepted token parses");
            assert_eq!(parsed.alg, Alg::HS256, "only the HS256 key exists");
            let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
            let genuine = jsonwebtoken::crypto::verify(
                parsed.signature_b64,
                parsed.signing_input,
                &key,
                jsonwebtoken::Algorithm::HS256,
            )
            .unwrap_or(false);
            assert!(
                genuine,
                "accepted a token whose HMAC does not verify: {token:?}"
            );
            hit(&reached::JWT_ACCEPTED);
        }
    }
}
