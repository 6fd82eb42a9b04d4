//! Who may do what: JWT (HS256) tokens for connections and channels, and
//! the API key for the HTTP publish API.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use duplex_hub::{ErrorCode, HubError};

/// What a token says about its holder.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The identity.
    pub sub: String,
    /// A display name (else the `connect` name, else `sub`).
    #[serde(default)]
    pub name: Option<String>,
    /// May kick and ban.
    #[serde(default)]
    pub admin: bool,
    /// Channels it may subscribe to (`*` suffix: prefix match). Absent: all.
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
    /// Channels it may publish to. Absent: all.
    #[serde(default)]
    pub publish: Option<Vec<String>>,
}

/// Verifies tokens signed with one shared secret.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier for HS256 tokens signed with `secret`. `exp` is checked
    /// when present.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The token's claims, or `unauthorized` saying why not.
    pub fn verify(&self, token: &str) -> Result<Claims, HubError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| HubError::new(ErrorCode::Unauthorized, format!("invalid token: {e}")))
    }
}

/// Whether `channel` is covered by `patterns` (`None`: everything).
pub fn allowed(patterns: Option<&[String]>, channel: &str) -> bool {
    match patterns {
        None => true,
        Some(list) => list.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => channel.starts_with(prefix),
            None => p == channel,
        }),
    }
}

/// Compares API keys in constant time.
pub fn keys_match(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    #[test]
    fn verifies_signature_and_expiry() {
        let v = TokenVerifier::new("s3cret");
        let claims = serde_json::json!({"sub": "alice", "admin": true, "publish": ["chat:*"]});
        let token = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        let c = v.verify(&token).unwrap();
        assert_eq!((c.sub.as_str(), c.admin), ("alice", true));
        assert!(allowed(c.publish.as_deref(), "chat:lobby"));
        assert!(!allowed(c.publish.as_deref(), "news"));
        let forged = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(v.verify(&forged).unwrap_err().code, ErrorCode::Unauthorized);
        let expired = serde_json::json!({"sub": "bob", "exp": 1000});
        let expired = encode(
            &Header::default(),
            &expired,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(v.verify(&expired).unwrap_err().message.contains("xpired"));
    }

    #[test]
    fn key_comparison() {
        assert!(keys_match("abc", "abc"));
        assert!(!keys_match("abd", "abc"));
        assert!(!keys_match("ab", "abc"));
    }
}
