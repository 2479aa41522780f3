//! Accounts: creating one with a password (the `users add` command, the demo user, tests).

use crate::password::{self, normalize_email};
use crate::store::{NewUser, Store};
use crate::tokens;

/// Creates a user; `Ok(None)` if the email is taken.
pub async fn create(
    store: &Store,
    email: &str,
    password: &str,
    name: &str,
    roles: &[String],
    now: i64,
) -> Result<Option<String>, String> {
    let email = normalize_email(email);
    if email.is_empty() || !email.contains('@') || password.len() < 8 || name.trim().is_empty() {
        return Err("a user needs an email, a name and a password of at least 8 characters".into());
    }
    let hash = password::hash(password).await?;
    let id = tokens::random_id();
    let created = store
        .create_user(&NewUser {
            id: &id,
            email: &email,
            password_hash: &hash,
            name: name.trim(),
            roles,
            now,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(created.then_some(id))
}
