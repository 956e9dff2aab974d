//! Mints a JWT for benchmarks: `mint_jwt KEY.pem TENANT [SECONDS [ISSUER
//! AUDIENCE]]` prints a token signed with the PEM private key (P-256:
//! ES256; RSA: RS256), valid for SECONDS; with ISSUER and AUDIENCE it is a
//! workload's platform token (`iss`, `aud`) for `POST /auth/login/jwt`.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(tenant)) = (args.next(), args.next()) else {
        eprintln!("usage: mint_jwt KEY.pem TENANT [SECONDS [ISSUER AUDIENCE]]");
        std::process::exit(2);
    };
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3600);
    let pem = std::fs::read(&path).expect("read the private key");
    let (key, alg) = match jsonwebtoken::EncodingKey::from_ec_pem(&pem) {
        Ok(key) => (key, jsonwebtoken::Algorithm::ES256),
        Err(_) => (
            jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
                .expect("a P-256 or RSA private key in PEM"),
            jsonwebtoken::Algorithm::RS256,
        ),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = serde_json::json!({
        "sub": "bench",
        "tenant": tenant,
        "iat": now,
        "exp": now + seconds,
    });
    if let (Some(issuer), Some(audience)) = (args.next(), args.next()) {
        claims["iss"] = issuer.into();
        claims["aud"] = audience.into();
    }
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).expect("sign");
    println!("{token}");
}
