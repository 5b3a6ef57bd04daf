//! Compact JWS signing and verification with aws-lc-rs key pairs parsed once.

use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use keygate_config::SigningAlgorithm;

use crate::ProviderError;

pub(crate) fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn crypto(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Crypto(e.to_string())
}

/// A parsed private key, ready to sign.
pub(crate) enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    /// Generates a new key; returns it with its PKCS#8 DER (base64) for storage.
    pub fn generate(alg: SigningAlgorithm) -> Result<(Self, String), ProviderError> {
        match alg {
            SigningAlgorithm::Rs256 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(crypto)?;
                use aws_lc_rs::encoding::AsDer;
                let der = pair.as_der().map_err(crypto)?;
                let encoded = STANDARD.encode(der.as_ref());
                Ok((Signer::Rsa(pair), encoded))
            }
            SigningAlgorithm::Es256 => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let doc =
                    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                        .map_err(crypto)?;
                let pair = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    doc.as_ref(),
                )
                .map_err(crypto)?;
                Ok((Signer::Ec(pair), STANDARD.encode(doc.as_ref())))
            }
        }
    }

    pub fn from_stored(alg: &str, pkcs8_b64: &str) -> Result<Self, ProviderError> {
        let der = STANDARD.decode(pkcs8_b64).map_err(crypto)?;
        match alg {
            "RS256" => Ok(Signer::Rsa(RsaKeyPair::from_pkcs8(&der).map_err(crypto)?)),
            "ES256" => Ok(Signer::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(crypto)?,
            )),
            other => Err(ProviderError::Crypto(format!(
                "unsupported stored key algorithm {other}"
            ))),
        }
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    /// The public JWK (with `kid`, `use` and `alg`).
    pub fn public_jwk(&self, kid: &str) -> Value {
        match self {
            Signer::Rsa(pair) => {
                let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                let unsigned = |v: &[u8]| {
                    let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
                    b64(&v[start..])
                };
                json!({
                    "use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
                    "n": unsigned(&public.n),
                    "e": unsigned(&public.e),
                })
            }
            Signer::Ec(pair) => {
                // Uncompressed point: 0x04 || X (32) || Y (32).
                let point = pair.public_key().as_ref();
                let (x, y) = point
                    .get(1..)
                    .unwrap_or_default()
                    .split_at(32.min(point.len().saturating_sub(1)));
                json!({
                    "use": "sig", "kty": "EC", "kid": kid, "alg": "ES256", "crv": "P-256",
                    "x": b64(x), "y": b64(y),
                })
            }
        }
    }

    /// Signs `payload` as a compact JWS with the given `kid`.
    pub fn sign(&self, kid: &str, payload: &[u8]) -> Result<String, ProviderError> {
        let header = json!({"alg": self.alg(), "kid": kid, "typ": "JWT"});
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload));
        let sig = match self {
            Signer::Rsa(pair) => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    signing_input.as_bytes(),
                    &mut sig,
                )
                .map_err(crypto)?;
                sig
            }
            Signer::Ec(pair) => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                pair.sign(&rng, signing_input.as_bytes())
                    .map_err(crypto)?
                    .as_ref()
                    .to_vec()
            }
        };
        Ok(format!("{signing_input}.{}", b64(&sig)))
    }
}

/// Verifies a compact JWS against a set of public JWKs; returns the payload bytes when the
/// signature is valid under the key its `kid` names.
pub(crate) fn verify(token: &str, jwks: &[Value]) -> Option<Vec<u8>> {
    if token.len() > 16 * 1024 {
        return None;
    }
    let mut parts = token.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    let kid = header.get("kid")?.as_str()?;
    let alg = header.get("alg")?.as_str()?;
    let jwk = jwks
        .iter()
        .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))?;
    // `alg` is optional in a JWK (RFC 7517); when present it must match the token's, and the key
    // type must suit the algorithm either way.
    if jwk
        .get("alg")
        .and_then(Value::as_str)
        .is_some_and(|a| a != alg)
    {
        return None;
    }
    let kty = jwk.get("kty").and_then(Value::as_str);
    let suits = match alg {
        "RS256" => kty == Some("RSA"),
        "ES256" => kty == Some("EC") && jwk.get("crv").and_then(Value::as_str) == Some("P-256"),
        _ => false,
    };
    if !suits {
        return None;
    }
    let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
    let message = &token.as_bytes()[..h.len() + 1 + p.len()];
    let field = |name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
    };
    let ok = match alg {
        "RS256" => {
            let key = RsaPublicKeyComponents {
                n: field("n")?,
                e: field("e")?,
            };
            key.verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, &sig)
                .is_ok()
        }
        "ES256" => {
            let mut point = vec![4u8];
            point.extend(field("x")?);
            point.extend(field("y")?);
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, &sig)
                .is_ok()
        }
        _ => false,
    };
    if !ok {
        return None;
    }
    URL_SAFE_NO_PAD.decode(p).ok()
}

/// `at_hash`/`c_hash`: the left half of the SHA-256 of the value, base64url.
pub(crate) fn half_hash(value: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes());
    b64(&digest.as_ref()[..16])
}

/// PKCE S256 transform of a code verifier.
pub(crate) fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    b64(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_both_algorithms() {
        for alg in [SigningAlgorithm::Rs256, SigningAlgorithm::Es256] {
            let (signer, stored) = Signer::generate(alg).unwrap();
            let reloaded = Signer::from_stored(signer.alg(), &stored).unwrap();
            let jwk = reloaded.public_jwk("k1");
            let token = reloaded.sign("k1", br#"{"sub":"x"}"#).unwrap();
            assert_eq!(
                verify(&token, std::slice::from_ref(&jwk)).as_deref(),
                Some(&br#"{"sub":"x"}"#[..])
            );
            // A flipped payload byte, a wrong kid and an unknown key all fail.
            let mut parts: Vec<String> = token.split('.').map(String::from).collect();
            parts[1] = b64(br#"{"sub":"y"}"#);
            assert!(verify(&parts.join("."), std::slice::from_ref(&jwk)).is_none());
            assert!(verify(&token, &[]).is_none());
            // Keys without `alg` (optional in RFC 7517) verify by their type.
            let mut bare = jwk.clone();
            bare.as_object_mut().unwrap().remove("alg");
            assert!(verify(&token, std::slice::from_ref(&bare)).is_some());
            let (other, _) = Signer::generate(alg).unwrap();
            assert!(verify(&token, &[other.public_jwk("k1")]).is_none());
        }
    }

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
