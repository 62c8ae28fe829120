//! Gateway keys are known to the system only by their SHA-256 digest: the control plane stores
//! it, the snapshot carries it, the data plane looks requests up by it.

use std::fmt;

use sha2::{Digest, Sha256};

/// Every gateway key secret starts with this, so leaked keys are easy to recognise.
pub const KEY_SECRET_PREFIX: &str = "cgw-";

/// SHA-256 of a gateway key secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of a presented secret.
    pub fn of_secret(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Parses a digest from its 32 raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BadDigest> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| BadDigest(bytes.len()))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not a secret, but a short form is enough to correlate.
        write!(f, "KeyDigest({}…)", hex::encode(&self.0[..6]))
    }
}

/// A digest that is not 32 bytes long.
#[derive(Debug, thiserror::Error)]
#[error("key digest must be 32 bytes, got {0}")]
pub struct BadDigest(usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256() {
        let d = KeyDigest::of_secret("abc");
        assert_eq!(
            hex::encode(d.as_bytes()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyDigest::from_slice(d.as_bytes()).unwrap(), d);
        assert!(KeyDigest::from_slice(&[0; 31]).is_err());
    }
}
