//! Mints an ES256 JWT for benchmarks: `mint_jwt KEY.pem TENANT [SECONDS]`
//! prints a token signed with the PEM private key, valid for SECONDS.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(tenant)) = (args.next(), args.next()) else {
        eprintln!("usage: mint_jwt KEY.pem TENANT [SECONDS]");
        std::process::exit(2);
    };
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3600);
    let pem = std::fs::read(&path).expect("read the private key");
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("a P-256 private key in PEM");
    let claims = serde_json::json!({
        "sub": "bench",
        "tenant": tenant,
        "exp": jsonwebtoken::get_current_timestamp() + seconds,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .expect("sign");
    println!("{token}");
}
