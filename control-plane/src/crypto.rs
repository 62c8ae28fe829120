//! Secrets the control plane creates or keeps: upstream API keys encrypted at rest with
//! AES-256-GCM, and gateway key secrets generated once and stored only as digests.

use std::{fmt, str::FromStr};

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng},
};
use gateway_proto::digest::{KEY_SECRET_PREFIX, KeyDigest};
use rand::{Rng, distr::Alphanumeric};

const NONCE_LEN: usize = 12;
/// Random characters in a gateway key secret: 43 base62 characters ≈ 256 bits.
const SECRET_RANDOM_LEN: usize = 43;
/// Characters of the secret kept in clear as its visible prefix.
const VISIBLE_PREFIX_LEN: usize = 12;

/// The key that encrypts upstream API keys at rest.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self(rand::rng().random())
    }

    /// The key as 64 hex characters (how it is configured).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for EncryptionKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s.trim())
            .map_err(|_| "must be 64 hex characters (try `openssl rand -hex 32`)".to_owned())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|v: Vec<u8>| {
            format!(
                "must be 32 bytes (64 hex characters), got {} bytes (try `openssl rand -hex 32`)",
                v.len()
            )
        })?;
        Ok(Self(bytes))
    }
}

/// Encrypts and decrypts upstream API keys.
#[derive(Clone)]
pub struct Cipher(Aes256Gcm);

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher([redacted])")
    }
}

/// A stored secret that does not decrypt with the configured key.
#[derive(Debug, thiserror::Error)]
#[error("stored secret does not decrypt with the configured ENCRYPTION_KEY")]
pub struct DecryptError;

impl Cipher {
    /// A cipher for the given key.
    pub fn new(key: &EncryptionKey) -> Self {
        Self(Aes256Gcm::new(&Key::<Aes256Gcm>::from(key.0)))
    }

    /// `nonce ‖ ciphertext ‖ tag`.
    pub fn encrypt(&self, plaintext: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption with a valid key and a fresh nonce cannot fail for inputs this small.
        let sealed = self
            .0
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of a value produced by [`Cipher::encrypt`].
    pub fn decrypt(&self, stored: &[u8]) -> Result<String, DecryptError> {
        if stored.len() < NONCE_LEN {
            return Err(DecryptError);
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DecryptError)?;
        let plain = self
            .0
            .decrypt(&Nonce::from(nonce), sealed)
            .map_err(|_| DecryptError)?;
        String::from_utf8(plain).map_err(|_| DecryptError)
    }
}

/// A masked hint of an upstream API key: enough to recognise it, not to use it.
pub fn key_hint(api_key: &str) -> String {
    let chars: Vec<char> = api_key.chars().collect();
    if chars.len() < 12 {
        return "…".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// A newly generated gateway key.
pub struct NewSecret {
    /// The full secret, shown to the operator once.
    pub secret: String,
    /// Its first characters, stored in clear.
    pub prefix: String,
    /// What is stored and streamed to data planes.
    pub digest: KeyDigest,
}

impl fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSecret")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Generates a gateway key secret.
pub fn generate_key_secret() -> NewSecret {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(SECRET_RANDOM_LEN)
        .map(char::from)
        .collect();
    let secret = format!("{KEY_SECRET_PREFIX}{random}");
    NewSecret {
        prefix: secret[..VISIBLE_PREFIX_LEN].to_owned(),
        digest: KeyDigest::of_secret(&secret),
        secret,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypts_round_trip_and_rejects_other_keys() {
        let cipher = Cipher::new(&EncryptionKey::generate());
        let sealed = cipher.encrypt("sk-upstream-1234567890");
        assert!(!sealed.windows(6).any(|w| w == b"sk-ups"));
        assert_eq!(cipher.decrypt(&sealed).unwrap(), "sk-upstream-1234567890");
        let other = Cipher::new(&EncryptionKey::generate());
        assert!(other.decrypt(&sealed).is_err());
        assert!(cipher.decrypt(&sealed[..5]).is_err());
    }

    #[test]
    fn parses_hex_keys_with_helpful_errors() {
        let key = EncryptionKey::generate();
        assert!(key.to_hex().parse::<EncryptionKey>().is_ok());
        assert!(
            "abcd"
                .parse::<EncryptionKey>()
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!("zz".parse::<EncryptionKey>().unwrap_err().contains("hex"));
        assert_eq!(format!("{key:?}"), "[redacted]");
    }

    #[test]
    fn secrets_are_unique_prefixed_and_hinted() {
        let a = generate_key_secret();
        let b = generate_key_secret();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_SECRET_PREFIX));
        assert_eq!(a.secret.len(), KEY_SECRET_PREFIX.len() + SECRET_RANDOM_LEN);
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(a.digest, KeyDigest::of_secret(&a.secret));
        assert!(!format!("{a:?}").contains(&a.secret));
        assert_eq!(key_hint("sk-abcdefghijklmnop"), "sk-…mnop");
        assert_eq!(key_hint("short"), "…");
    }
}
