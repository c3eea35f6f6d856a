//! The token parser of `rs-jwt`: a JWS in compact serialisation
//! (`header.claims.signature`, each base64url), decoded and checked
//! before any key is looked at.
//!
//! It refuses, with the messages of Kong's `jwt` plugin where Kong has
//! one (`Bad token; invalid JSON`, `Bad token; invalid alg`, …):
//! - a token longer than [`MAX_TOKEN_LEN`] bytes (checked first, so no
//!   hostile size reaches the decoders);
//! - fewer than three segments, a segment that is not base64url, a
//!   header or claims segment that is not JSON (serde_json's recursion
//!   limit bounds nesting);
//! - a header whose `alg` is missing, not a string, `none` or an
//!   algorithm rs-jwt does not verify;
//! - a header or claims object naming a member twice (`{"exp":1,"exp":2}`:
//!   parsers disagree on which one wins, so no answer is safe);
//! - a `crit` header (RFC 7515 §4.1.11: no extension is understood here);
//! - a non-string `kid`; claims that are not an object; a signature that
//!   is empty, not base64url, or followed by more segments.
//!
//! Parsing verifies nothing: see [`Token::verify`].

use jsonwebtoken::DecodingKey;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Longest token accepted, in bytes (identity providers' tokens are a few
/// KiB; nginx's default header buffer is 8 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A signature algorithm `rs-jwt` verifies (`alg` of the JWS header).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Deserialize,
    Serialize,
    schemars::JsonSchema,
)]
pub enum Alg {
    /// HMAC with SHA-256 (a shared secret).
    HS256,
    /// HMAC with SHA-384 (a shared secret).
    HS384,
    /// HMAC with SHA-512 (a shared secret).
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519 (RFC 8037).
    EdDSA,
}

/// The kind of key an algorithm needs: a token is only ever verified with
/// a key of its algorithm's family, so an HMAC token can never be checked
/// against a public key used as a secret (algorithm confusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A shared secret (HS*).
    Hmac,
    /// An RSA public key (RS*, PS*).
    Rsa,
    /// An EC public key (ES*; the curve must match).
    Ec,
    /// An Ed25519 public key (EdDSA).
    Ed,
}

impl Alg {
    /// Every algorithm, in the order of the enum.
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The algorithm called `name` in a JWS header (case-sensitive).
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The `alg` value of a JWS header.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The kind of key this algorithm verifies with.
    pub fn family(self) -> Family {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => Family::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                Family::Rsa
            }
            Alg::ES256 | Alg::ES384 => Family::Ec,
            Alg::EdDSA => Family::Ed,
        }
    }

    fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Alg::HS256 => A::HS256,
            Alg::HS384 => A::HS384,
            Alg::HS512 => A::HS512,
            Alg::RS256 => A::RS256,
            Alg::RS384 => A::RS384,
            Alg::RS512 => A::RS512,
            Alg::PS256 => A::PS256,
            Alg::PS384 => A::PS384,
            Alg::PS512 => A::PS512,
            Alg::ES256 => A::ES256,
            Alg::ES384 => A::ES384,
            Alg::EdDSA => A::EdDSA,
        }
    }
}

/// Why a token could not be parsed; [`TokenError::message`] is the 401's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    TooLarge,
    /// Not three base64url segments, or header/claims not JSON objects.
    InvalidJson,
    /// `alg` missing, not a string, `none`, or not one rs-jwt verifies.
    InvalidAlg,
    /// A `crit` header parameter.
    InvalidCrit,
    /// A `kid` that is not a string.
    InvalidKid,
    /// Claims that are not an object, or name a member twice.
    InvalidClaims,
    /// The signature segment is empty, not base64url, or more follow.
    InvalidSignature,
}

impl TokenError {
    /// The message of the 401 (Kong's `jwt` plugin's words where it has them).
    pub fn message(self) -> &'static str {
        match self {
            TokenError::TooLarge => "Bad token; too large",
            TokenError::InvalidJson => "Bad token; invalid JSON",
            TokenError::InvalidAlg => "Bad token; invalid alg",
            TokenError::InvalidCrit => "Bad token; unsupported crit",
            TokenError::InvalidKid => "Bad token; invalid kid",
            TokenError::InvalidClaims => "Bad token; invalid claims",
            TokenError::InvalidSignature => "Bad token; invalid signature",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A parsed (not yet verified) token.
#[derive(Debug, Clone)]
pub struct Token<'a> {
    /// The header's `alg`.
    pub alg: Alg,
    /// The header's `kid`, if it has one.
    pub kid: Option<String>,
    /// The decoded header.
    pub header: Map<String, Value>,
    /// The decoded claims.
    pub claims: Map<String, Value>,
    /// What was signed: `header.claims` as sent.
    pub signing_input: &'a [u8],
    /// The signature segment, base64url as sent.
    pub signature_b64: &'a str,
    /// The signature's bytes.
    pub signature: Vec<u8>,
}

impl Token<'_> {
    /// Whether the signature verifies with `key`, a key of `family`, under
    /// the token's `alg`. A key of another family never verifies (no
    /// HMAC with a public key as the secret, whatever `alg` says).
    pub fn verify(&self, family: Family, key: &DecodingKey) -> bool {
        if self.alg.family() != family {
            return false;
        }
        // RFC 7518 §3.4: an ECDSA signature is exactly R || S.
        let expected_len = match self.alg {
            Alg::ES256 => Some(64),
            Alg::ES384 => Some(96),
            Alg::EdDSA => Some(64),
            _ => None,
        };
        if expected_len.is_some_and(|len| len != self.signature.len()) {
            return false;
        }
        jsonwebtoken::crypto::verify(
            self.signature_b64,
            self.signing_input,
            key,
            self.alg.to_jsonwebtoken(),
        )
        .unwrap_or(false)
    }
}

const BASE64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

fn b64(segment: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    BASE64URL.decode(segment).ok()
}

/// A JSON object whose members are all named differently.
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.contains_key(&key) {
                        return Err(de::Error::custom(format!("duplicate member {key:?}")));
                    }
                    map.insert(key, value);
                }
                Ok(UniqueObject(map))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// What a segment decoded to.
enum Decoded {
    Object(Map<String, Value>),
    /// Valid JSON, but not an object, or an object with a duplicate member.
    NotUnique,
    /// Not base64url or not JSON.
    Invalid,
}

fn decode_object(segment: &[u8]) -> Decoded {
    let Some(json) = b64(segment) else {
        return Decoded::Invalid;
    };
    match serde_json::from_slice::<UniqueObject>(&json) {
        Ok(UniqueObject(map)) => Decoded::Object(map),
        Err(e) if e.is_data() => Decoded::NotUnique,
        Err(_) => Decoded::Invalid,
    }
}

/// Parses `token` (the bytes after `Bearer `, or a query/cookie value).
///
/// # Errors
/// The [`TokenError`] naming what is wrong, checked in Kong's order: size,
/// JSON, `alg`, claims, signature.
pub fn parse(token: &[u8]) -> Result<Token<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.splitn(3, |&b| b == b'.');
    let (Some(header_64), Some(claims_64), Some(signature_64)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::InvalidJson);
    };
    let header = match decode_object(header_64) {
        Decoded::Object(header) => header,
        Decoded::NotUnique | Decoded::Invalid => return Err(TokenError::InvalidJson),
    };
    let claims = decode_object(claims_64);
    if matches!(claims, Decoded::Invalid) {
        return Err(TokenError::InvalidJson);
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Alg::from_name(name).ok_or(TokenError::InvalidAlg)?,
        _ => return Err(TokenError::InvalidAlg),
    };
    if header.contains_key("crit") {
        return Err(TokenError::InvalidCrit);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenError::InvalidKid),
    };
    let Decoded::Object(claims) = claims else {
        return Err(TokenError::InvalidClaims);
    };
    if signature_64.is_empty() || signature_64.contains(&b'.') {
        return Err(TokenError::InvalidSignature);
    }
    let signature = b64(signature_64).ok_or(TokenError::InvalidSignature)?;
    // base64url is ASCII: the segment is valid UTF-8 once decoded.
    let signature_b64 =
        std::str::from_utf8(signature_64).map_err(|_| TokenError::InvalidSignature)?;
    Ok(Token {
        alg,
        kid,
        header,
        claims,
        signing_input: &token[..header_64.len() + 1 + claims_64.len()],
        signature_b64,
        signature,
    })
}

/// Encodes `bytes` as base64url without padding (for tests and tools that
/// build tokens).
pub fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    BASE64URL.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(json: &str) -> String {
        base64url(json.as_bytes())
    }

    fn token(header: &str, claims: &str, sig: &str) -> String {
        format!("{}.{}.{}", seg(header), seg(claims), sig)
    }

    #[test]
    fn parses_a_well_formed_token() {
        let t = token(
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#"{"sub":"a"}"#,
            "AAAA",
        );
        let parsed = parse(t.as_bytes()).expect("parses");
        assert_eq!(parsed.alg, Alg::RS256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims["sub"], "a");
        assert_eq!(parsed.signature, vec![0, 0, 0]);
        assert_eq!(
            parsed.signing_input,
            t.rsplit_once('.').unwrap().0.as_bytes()
        );
    }

    #[test]
    fn refuses_hostile_shapes_with_kongs_messages() {
        let ok_h = r#"{"alg":"HS256"}"#;
        let cases: Vec<(String, TokenError)> = vec![
            ("".into(), TokenError::InvalidJson),
            ("a.b".into(), TokenError::InvalidJson),
            (token("not json", "{}", "AAAA"), TokenError::InvalidJson),
            (
                format!("{}.{}.AAAA", "!!!", seg("{}")),
                TokenError::InvalidJson,
            ),
            (
                token(r#"{"alg":"none"}"#, "{}", "AAAA"),
                TokenError::InvalidAlg,
            ),
            (
                token(r#"{"alg":"None"}"#, "{}", "AAAA"),
                TokenError::InvalidAlg,
            ),
            (
                token(r#"{"alg":"ES512"}"#, "{}", "AAAA"),
                TokenError::InvalidAlg,
            ),
            (token(r#"{"alg":1}"#, "{}", "AAAA"), TokenError::InvalidAlg),
            (
                token(r#"{"typ":"JWT"}"#, "{}", "AAAA"),
                TokenError::InvalidAlg,
            ),
            (
                token(r#"{"alg":"HS256","crit":["b64"]}"#, "{}", "AAAA"),
                TokenError::InvalidCrit,
            ),
            (
                token(r#"{"alg":"HS256","kid":7}"#, "{}", "AAAA"),
                TokenError::InvalidKid,
            ),
            (token(ok_h, "[1,2]", "AAAA"), TokenError::InvalidClaims),
            (token(ok_h, "42", "AAAA"), TokenError::InvalidClaims),
            (
                token(ok_h, r#"{"exp":1,"exp":99999999999}"#, "AAAA"),
                TokenError::InvalidClaims,
            ),
            (
                token(r#"{"alg":"HS256","alg":"none"}"#, "{}", "AAAA"),
                TokenError::InvalidJson,
            ),
            (token(ok_h, "{}", ""), TokenError::InvalidSignature),
            (token(ok_h, "{}", "AA+A"), TokenError::InvalidSignature),
            (token(ok_h, "{}", "AAAA.AAAA"), TokenError::InvalidSignature),
            (token(ok_h, "{}", "AAAA=="), TokenError::InvalidSignature),
            ("x".repeat(MAX_TOKEN_LEN + 1), TokenError::TooLarge),
        ];
        for (input, expected) in cases {
            let got = parse(input.as_bytes()).map(|_| ()).expect_err(&input);
            assert_eq!(got, expected, "{input}");
        }
    }

    #[test]
    fn a_nesting_bomb_is_invalid_json_not_a_stack_overflow() {
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
        let t = token(r#"{"alg":"HS256"}"#, &deep, "AAAA");
        assert_eq!(
            parse(t.as_bytes()).map(|_| ()),
            Err(TokenError::InvalidJson)
        );
    }

    #[test]
    fn verify_refuses_a_key_of_another_family() {
        let secret = DecodingKey::from_secret(b"secret");
        let header = seg(r#"{"alg":"HS256"}"#);
        let claims = seg("{}");
        let input = format!("{header}.{claims}");
        let key = jsonwebtoken::EncodingKey::from_secret(b"secret");
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        let t = format!("{input}.{sig}");
        let parsed = parse(t.as_bytes()).unwrap();
        assert!(parsed.verify(Family::Hmac, &secret));
        assert!(!parsed.verify(Family::Rsa, &secret));
        let other = DecodingKey::from_secret(b"other");
        assert!(!parsed.verify(Family::Hmac, &other));
    }
}
