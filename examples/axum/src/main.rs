//! An axum API that accepts tokenwarden's tokens: `cargo run -p tokenwarden-example-axum`.
use axum::http::HeaderValue;
use axum::{Json, Router, middleware, routing::get};
use tokenwarden_dpop::feed::{Options, discover};
use tokenwarden_dpop::resource::{
    Authenticated, CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS, add_nonce,
};
use tower_http::cors::CorsLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let rs = discover(
        &env("AUTH_SERVER", "http://127.0.0.1:8080"),
        Options {
            public_origins: vec![env("PUBLIC_ORIGIN", "http://127.0.0.1:3004")],
            nonce_secret: std::env::var("NONCE_SECRET").ok(), // the auth server's --dpop-nonce-secret
            revocation_token: std::env::var("REVOCATION_TOKEN").ok(), // --revocation-feed-token-file's
            ..Options::default()
        },
    )
    .await?;
    let cors = CorsLayer::new()
        .allow_origin(env("SPA_ORIGIN", "http://127.0.0.1:8080").parse::<HeaderValue>()?)
        .allow_methods(CORS_ALLOW_METHODS)
        .allow_headers(CORS_ALLOW_HEADERS)
        .expose_headers(CORS_EXPOSE_HEADERS);
    // Every handler that needs a user takes `Authenticated`: a route without it is public.
    let app = Router::new()
        .route(
            "/orders",
            get(|Authenticated(t): Authenticated| async move {
                Json(serde_json::json!({ "user": t.sub, "orders": [] }))
            }),
        )
        .layer(middleware::map_response_with_state(rs.clone(), add_nonce))
        .layer(cors)
        .with_state(rs);
    let listener = tokio::net::TcpListener::bind(env("BIND", "127.0.0.1:3004")).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
