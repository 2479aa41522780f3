//! Accounts from outside the sign-in flows: one created with a password (`users add`, the demo
//! user, tests), many imported with the password hashes another app made (`users import`), and
//! the roles and claims the app owns (`users set-claims`, `users set-roles`).

use std::collections::{HashMap, HashSet};
use std::io::BufRead;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::legacy::{valid_id, valid_role};
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
    if !crate::password::acceptable_email(&email) || password.len() < 8 || name.trim().is_empty() {
        return Err("a user needs an email, a name and a password of at least 8 characters".into());
    }
    if !crate::password::new_address(&email) {
        return Err(crate::password::NEW_ADDRESS_RULE.into());
    }
    if !crate::store::valid_name(name.trim()) {
        return Err(crate::store::NAME_RULE.into());
    }
    if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
        return Err(format!(
            "role {bad:?} must be 1 to 64 letters, digits or - _ . :"
        ));
    }
    let hash = password::hash(password).await?;
    let id = tokens::random_id();
    let created = store
        .create_user(&NewUser {
            id: &id,
            email: &email,
            roles,
            name: name.trim(),
            password_hash: &hash,
            email_verified_at: None,
            // The operator chose it.
            password_unproved: false,
            claims: "{}",
            now,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(created.then_some(id))
}

/// One line of an import file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    email: String,
    /// Kept as the `sub`; generated when absent.
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    email_verified: bool,
    /// In a format crate::hashes understands; absent: no password (they sign in by code, by a
    /// reset, or through the legacy backend).
    password_hash: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    claims: Map<String, Value>,
}

/// A checked line, ready to insert.
struct Ready {
    id: String,
    /// The line named the id (a line without one matches a user by email alone).
    given_id: bool,
    email: String,
    name: String,
    email_verified: bool,
    password_hash: String,
    roles: Vec<String>,
    claims: String,
}

/// What an import did (or, for a dry run, would do).
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Lines read (blank lines not counted).
    pub lines: usize,
    pub imported: usize,
    /// Users already there, left as they are (a second run of the same file).
    pub unchanged: usize,
    /// (line number, why): when any, nothing was imported.
    pub refused: Vec<(usize, String)>,
}

/// Longest line accepted, in bytes.
const MAX_LINE: usize = 64 * 1024;

/// The next line of `input` (`None` at its end), holding at most [`MAX_LINE`] bytes of it in
/// memory: a longer line, or one that is not UTF-8, is read to its end and refused.
fn next_line(input: &mut impl BufRead) -> std::io::Result<Option<Result<String, String>>> {
    use std::io::Read;
    let mut buf = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 2;
    if input.by_ref().take(limit).read_until(b'\n', &mut buf)? == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") && buf.len() > MAX_LINE {
        // The rest of the line, thrown away as it comes.
        loop {
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    input.consume(i + 1);
                    break;
                }
                None => {
                    let all = chunk.len();
                    input.consume(all);
                }
            }
        }
        return Ok(Some(Err(format!("longer than {MAX_LINE} bytes"))));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    if buf.len() > MAX_LINE {
        return Ok(Some(Err(format!("longer than {MAX_LINE} bytes"))));
    }
    Ok(Some(
        String::from_utf8(buf).map_err(|_| "not UTF-8".to_owned()),
    ))
}

fn check_line(text: &str) -> Result<Ready, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("not a user object: {e}"))?;
    let email = normalize_email(&line.email);
    if !crate::password::acceptable_email(&email) {
        return Err(format!("email {:?} is not an address", line.email));
    }
    if !crate::password::new_address(&email) {
        return Err(format!(
            "email {:?}: {}",
            line.email,
            crate::password::NEW_ADDRESS_RULE
        ));
    }
    let given_id = line.id.is_some();
    let id = match line.id {
        Some(id) if valid_id(&id) => id,
        Some(id) => {
            return Err(format!(
                "id {id:?} must be 1 to 128 letters, digits or - _ . : @ | +"
            ));
        }
        None => tokens::random_id(),
    };
    let name = match line.name {
        Some(n) if !crate::store::valid_name(n.trim()) => {
            return Err(crate::store::NAME_RULE.into());
        }
        Some(n) => n.trim().to_owned(),
        None => crate::store::name_from_address(&email),
    };
    let password_hash = match line.password_hash {
        Some(h) => {
            crate::hashes::importable(&h).map_err(|e| e.to_string())?;
            h
        }
        None => String::new(),
    };
    if let Some(bad) = line.roles.iter().find(|r| !valid_role(r)) {
        return Err(format!(
            "role {bad:?} must be 1 to 64 letters, digits or - _ . :"
        ));
    }
    tokens::check_custom_claims(&line.claims)?;
    Ok(Ready {
        id,
        given_id,
        email,
        name,
        email_verified: line.email_verified,
        password_hash,
        roles: line.roles,
        claims: Value::Object(line.claims).to_string(),
    })
}

/// Imports the users of `input` (JSON Lines), all or nothing: every line is checked first
/// (its fields, its hash's format and cost, no id or email twice in the file, none taken by
/// another user); with any refused line nothing is written. Users already there with the same
/// id and email (or the same email, for a line without an id) are left as they are.
pub async fn import(
    store: &Store,
    mut input: impl BufRead,
    dry_run: bool,
    now: i64,
) -> Result<ImportReport, String> {
    let mut report = ImportReport::default();
    let existing = store.user_keys().await.map_err(|e| e.to_string())?;
    let by_email: HashMap<&str, &str> = existing
        .iter()
        .map(|(id, e)| (e.as_str(), id.as_str()))
        .collect();
    let by_id: HashMap<&str, &str> = existing
        .iter()
        .map(|(id, e)| (id.as_str(), e.as_str()))
        .collect();
    let (mut emails, mut ids) = (HashSet::new(), HashSet::new());
    let mut ready = Vec::new();
    let mut n = 0;
    while let Some(text) =
        next_line(&mut input).map_err(|e| format!("reading line {}: {e}", n + 1))?
    {
        n += 1;
        if text.as_ref().is_ok_and(|t| t.trim().is_empty()) {
            continue;
        }
        report.lines += 1;
        let mut refuse = |why: String| report.refused.push((n, why));
        let r = match text.and_then(|t| check_line(&t)) {
            Ok(r) => r,
            Err(why) => {
                refuse(why);
                continue;
            }
        };
        if !emails.insert(r.email.clone()) {
            refuse(format!("email {} appears twice in the file", r.email));
            continue;
        }
        match (by_email.get(r.email.as_str()), by_id.get(r.id.as_str())) {
            (Some(id), _) if *id == r.id || !r.given_id => {
                report.unchanged += 1;
                continue;
            }
            (Some(id), _) => {
                refuse(format!("email {} belongs to another user ({id})", r.email));
                continue;
            }
            (None, Some(email)) => {
                refuse(format!("id {} belongs to another user ({email})", r.id));
                continue;
            }
            (None, None) => {}
        }
        if !ids.insert(r.id.clone()) {
            refuse(format!("id {} appears twice in the file", r.id));
            continue;
        }
        ready.push(r);
    }
    if !report.refused.is_empty() || dry_run {
        if report.refused.is_empty() {
            report.imported = ready.len();
        }
        return Ok(report);
    }
    let users: Vec<NewUser<'_>> = ready
        .iter()
        .map(|r| NewUser {
            id: &r.id,
            email: &r.email,
            roles: &r.roles,
            name: &r.name,
            password_hash: &r.password_hash,
            email_verified_at: r.email_verified.then_some(now),
            // The old app's user chose it, and it never said the address was theirs.
            password_unproved: !r.email_verified,
            claims: &r.claims,
            now,
        })
        .collect();
    let imported = store
        .import_users(&users)
        .await
        .map_err(|e| format!("nothing was imported: {e}"))?;
    if !imported {
        return Err("nothing was imported: an id or email was taken while importing".into());
    }
    report.imported = users.len();
    Ok(report)
}

/// Replaces the claims of the user with `email` (a JSON object, none of them reserved) and/or
/// their roles. `Ok(false)`: no such user.
pub async fn set_claims(
    store: &Store,
    email: &str,
    claims: Option<&str>,
    roles: Option<&[String]>,
) -> Result<bool, String> {
    let claims = match claims {
        Some(text) => {
            let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
                return Err("claims must be a JSON object".into());
            };
            tokens::check_custom_claims(&map)?;
            Some(Value::Object(map).to_string())
        }
        None => None,
    };
    if let Some(bad) = roles.and_then(|r| r.iter().find(|r| !valid_role(r))) {
        return Err(format!(
            "role {bad:?} must be 1 to 64 letters, digits or - _ . :"
        ));
    }
    store
        .set_claims(&normalize_email(email), claims.as_deref(), roles)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line past the limit is refused without being held whole, and the lines after it are
    /// read as usual; bytes that are not UTF-8 are a refused line, not a failed import.
    #[test]
    fn an_import_reads_lines_within_the_limit_and_refuses_the_rest_one_by_one() {
        let mut input = Vec::new();
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        input.extend_from_slice(b"\n{\"email\":\"a@x.test\"}\r\n\xff\xfe\nlast");
        let mut input = std::io::Cursor::new(input);
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut input).unwrap() {
            lines.push(line);
        }
        let long = format!("longer than {MAX_LINE} bytes");
        assert_eq!(
            lines,
            [
                Err(long),
                Ok("{\"email\":\"a@x.test\"}".to_owned()),
                Err("not UTF-8".to_owned()),
                Ok("last".to_owned()),
            ]
        );
        let name = check_line("{\"email\":\"a@x.test\",\"name\":\"a\\u0000b\"}");
        assert!(name.is_err_and(|e| e.contains("control")));
    }
}
