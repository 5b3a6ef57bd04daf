use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `bytes` random bytes from the system CSPRNG, base64url without padding.
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // aws-lc's RNG only fails if the OS entropy source is gone; a zeroed id would be a security
    // hole, so in that case we abort the process rather than continue.
    if aws_lc_rs::rand::fill(&mut buf).is_err() {
        tracing::error!("the system random number generator failed; aborting");
        std::process::abort();
    }
    URL_SAFE_NO_PAD.encode(buf)
}
