//! AEAD sealing (AES-256-GCM) of cookie values and session records, for the pages that keep
//! state in the browser (authenticator sessions, the kubeconfig generator).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Browsers cap a cookie at 4096 bytes; anything longer is not ours.
pub const MAX_COOKIE: usize = 4000;

pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// A key derived from a secret, separated by purpose so one secret can seal several kinds of
    /// value without one being replayable as another.
    pub fn derive(secret: &[u8], purpose: &str) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"keygate-seal\0");
        ctx.update(purpose.as_bytes());
        ctx.update(b"\0");
        ctx.update(secret);
        Self::from_key(ctx.finish().as_ref())
    }

    /// `key` must be 32 bytes (a per-session key).
    pub fn from_key(key: &[u8]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key)
            .or_else(|_| UnboundKey::new(&AES_256_GCM, &[0u8; 32]))
            .map(LessSafeKey::new);
        match key {
            Ok(key) => Self { key },
            // AES-256-GCM accepts any 32-byte key; this cannot fail.
            Err(_) => std::process::abort(),
        }
    }

    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        if aws_lc_rs::rand::fill(&mut nonce).is_err() {
            std::process::abort();
        }
        let mut buf = plaintext.to_vec();
        if self
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .is_err()
        {
            std::process::abort();
        }
        let mut out = nonce.to_vec();
        out.extend(buf);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The plaintext, or `None` for anything tampered, truncated, oversized or sealed with another key.
    pub fn open(&self, value: &str) -> Option<Vec<u8>> {
        if value.len() > MAX_COOKIE * 2 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        self.open_bytes(&raw)
    }

    pub fn open_bytes(&self, raw: &[u8]) -> Option<Vec<u8>> {
        if raw.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::empty(), &mut buf).ok()?;
        Some(plain.to_vec())
    }

    pub fn seal_bytes(&self, plaintext: &[u8]) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(self.seal(plaintext))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let s = Sealer::derive(b"0123456789abcdef0123456789abcdef", "cookie");
        let sealed = s.seal(b"hello");
        assert_eq!(s.open(&sealed).as_deref(), Some(&b"hello"[..]));
        let other = Sealer::derive(b"0123456789abcdef0123456789abcdef", "state");
        assert!(other.open(&sealed).is_none(), "purposes are separated");
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(s.open(std::str::from_utf8(&bytes).unwrap_or("")).is_none());
        assert!(s.open("short").is_none());
        assert!(s.open(&"A".repeat(9000)).is_none());
    }
}
