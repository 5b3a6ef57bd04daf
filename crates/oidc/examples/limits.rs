//! The work limits the benchmark report compares against, measured in-process with the same code
//! the provider runs: one signature per refresh (RS256, ES256) and one bcrypt compare per login.
//! Prints JSON: operations per second of one core. `limits sign RS256 1.5`: that signature only,
//! for 1.5 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

fn rate(mut op: impl FnMut(), min_secs: f64) -> f64 {
    // Warm up, then run for at least `min_secs`.
    op();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < min_secs {
        op();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let payload = br#"{"iss":"https://dex.example.com/","sub":"CgVhZG1pbhIFbG9jYWw","aud":["kubernetes","kubeconfig-generator"],"exp":1800000600,"iat":1800000000,"email":"admin@example.com","email_verified":true,"groups":["admins","everyone"]}"#;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = serde_json::Map::new();
    // `limits sign RS256 1.5`: one algorithm for that many seconds, measured next to one run
    // of a benchmark (bench/run.py pairs them).
    if let [cmd, alg, secs] = args.as_slice()
        && cmd == "sign"
    {
        let alg = [
            keygate_config::SigningAlgorithm::Rs256,
            keygate_config::SigningAlgorithm::Es256,
        ]
        .into_iter()
        .find(|a| a.as_str() == alg)
        .expect("RS256 or ES256");
        let signer = keygate_oidc::bench_signer(alg);
        let r = rate(|| drop(signer(payload)), secs.parse().expect("seconds"));
        out.insert(format!("sign_{}_per_sec", alg.as_str()), r.into());
        println!("{}", serde_json::Value::Object(out));
        return;
    }
    for alg in [
        keygate_config::SigningAlgorithm::Rs256,
        keygate_config::SigningAlgorithm::Es256,
    ] {
        let signer = keygate_oidc::bench_signer(alg);
        let r = rate(|| drop(signer(payload)), 2.0);
        out.insert(format!("sign_{}_per_sec", alg.as_str()), r.into());
    }
    let hash = bcrypt::hash("password", 10).unwrap();
    let r = rate(|| drop(bcrypt::verify("wrong", &hash)), 3.0);
    out.insert("bcrypt10_verify_per_sec".into(), r.into());
    println!("{}", serde_json::Value::Object(out));
}
